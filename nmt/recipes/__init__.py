"""The chapter-7 recipes around the NMT toolkit: sentiment (GRU), image rows (RNN), stock forecasting (LSTM), and
the runnable opening arguments of the chapter (``rnn_basics``). Scripts: ``scripts/recipe_*.py``; configs:
``conf/recipe/<name>/``; notebooks: ``notebooks/``.
"""

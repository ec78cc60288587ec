"""The special token ids, fixed for the whole toolkit.

Every sentencepiece model nmt trains puts them first (:func:`nmt.tokenizer.train_sentencepiece`), the model's
embeddings use ``PAD_ID`` as their padding index, and search never produces ``PAD_ID`` or ``BOS_ID``. Modules
that only need the ids import them from here, without loading sentencepiece.
"""

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3

"""Score translations with sacrebleu (BLEU, chrF, TER): a hypothesis file against references, or a model
directory's translation of a corpus split against the split's references."""

from nmt.cli import hydra_main
from nmt.config import EvaluateConfig
from nmt.evaluate import evaluate_model


@hydra_main("evaluate", EvaluateConfig)
def main(cfg: EvaluateConfig) -> None:
    evaluate_model(cfg)


if __name__ == "__main__":
    main()

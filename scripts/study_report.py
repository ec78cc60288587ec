"""Tabulate a Hydra multirun study: ``study.csv`` and a BLEU-against-time plot (and ``decoding.csv``)."""

from nmt.cli import hydra_main
from nmt.config import StudyReportConfig
from nmt.study import report


@hydra_main("study_report", StudyReportConfig)
def main(cfg: StudyReportConfig) -> None:
    report(cfg.sweep_dir, cfg.decode_dir, cfg.top)


if __name__ == "__main__":
    main()

"""Training and decoding speed, peak memory and MFU on this machine: prints a table and writes JSON."""

from nmt.benchmark import run_benchmark
from nmt.cli import hydra_main
from nmt.config import BenchmarkConfig


@hydra_main("benchmark", BenchmarkConfig)
def main(cfg: BenchmarkConfig) -> None:
    run_benchmark(cfg)


if __name__ == "__main__":
    main()

"""Kill-anywhere drill: SIGKILL a training run N times, resume it each time, and check that nothing was lost.

python scripts/fault_drill.py              # 20 kills of the smoke config on a generated toy corpus
python scripts/fault_drill.py kills=3 work_dir=/tmp/drill
"""

from nmt.cli import hydra_main
from nmt.config import FaultDrillConfig
from nmt.fault_drill import fault_drill


@hydra_main("fault_drill", FaultDrillConfig)
def main(cfg: FaultDrillConfig) -> None:
    fault_drill(cfg)


if __name__ == "__main__":
    main()

"""collect_data.py with a stable-baselines3 SAC expert (the paper's humanoid-walk; an SB3 zip records no task).

    python -m scripts.data_collection.collect_data_sb3 --checkpoint_path=checkpoints/sac-humanoid-walk \\
        --dcs_backgrounds_path=DAVIS/JPEGImages/480p --save_path=data/humanoid-walk-test.hdf5 --num_trajectories=10
"""

from dataclasses import dataclass
from typing import Optional

from scripts.data_collection.collect_data import Config, main


@dataclass
class SACConfig(Config):
    domain_name: Optional[str] = "humanoid"  # dm_control domain of the SAC expert
    task_name: Optional[str] = "walk"  # dm_control task of the SAC expert


if __name__ == "__main__":
    main(SACConfig)

"""Collect a dataset with a stable-baselines3 SAC expert (the paper's humanoid-walk expert).

collect_data.py with other defaults (no code path of its own): an SB3 zip does not record its task: humanoid-walk.

    python -m scripts.data_collection.collect_data_sb3 --checkpoint_path=checkpoints/sac-humanoid-walk \\
        --dcs_backgrounds_path=DAVIS/JPEGImages/480p --save_path=data/humanoid-walk-test.hdf5 --num_trajectories=10 \\
        --dcs_difficulty=scale_easy_video_hard --dcs_backgrounds_split=train --dcs_img_hw=64 --seed=0 --cuda=False
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

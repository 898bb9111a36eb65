"""Settings of the Distracting Control Suite (Stone et al. 2021) as used by the paper (docs/FAITHFULNESS.md)."""

# difficulty -> (scale of the camera and colour distractions, number of background videos; None = all of the split)
DIFFICULTIES: dict[str, tuple[float, int | None]] = {
    "vanilla": (0.0, 0),
    "easy": (0.1, 4),
    "medium": (0.2, 8),
    "hard": (0.3, None),
    "scale_easy_video_hard": (0.1, None),  # the paper's datasets (with dynamic=True)
}

# DAVIS 2017 videos: the 60 training videos and the 30 validation videos, in the original DCS order.
DAVIS17_TRAINING_VIDEOS = (
    "bear", "bmx-bumps", "boat", "boxing-fisheye", "breakdance-flare", "bus", "car-turn", "cat-girl", "classic-car",
    "color-run", "crossing", "dance-jump", "dancing", "disc-jockey", "dog-agility", "dog-gooses", "dogs-scale",
    "drift-turn", "drone", "elephant", "flamingo", "hike", "hockey", "horsejump-low", "kid-football", "kite-walk",
    "koala", "lady-running", "lindy-hop", "longboard", "lucia", "mallard-fly", "mallard-water", "miami-surf",
    "motocross-bumps", "motorbike", "night-race", "paragliding", "planes-water", "rallye", "rhino", "rollerblade",
    "schoolgirls", "scooter-board", "scooter-gray", "sheep", "skate-park", "snowboard", "soccerball", "stroller",
    "stunt", "surf", "swing", "tennis", "tractor-sand", "train", "tuk-tuk", "upside-down", "varanus-cage", "walking",
)  # fmt: skip
DAVIS17_VALIDATION_VIDEOS = (
    "bike-packing", "blackswan", "bmx-trees", "breakdance", "camel", "car-roundabout", "car-shadow", "cows",
    "dance-twirl", "dog", "dogs-jump", "drift-chicane", "drift-straight", "goat", "gold-fish", "horsejump-high",
    "india", "judo", "kite-surf", "lab-coat", "libby", "loading", "mbike-trick", "motocross-jump",
    "paragliding-launch", "parkour", "pigs", "scooter-black", "shooting", "soapbox",
)  # fmt: skip
VIDEO_SPLITS = {"train": DAVIS17_TRAINING_VIDEOS, "val": DAVIS17_VALIDATION_VIDEOS}

# Background source names accepted besides a DAVIS folder: procedurally generated videos (src/dcs/videos.py).
BUILTIN = "builtin"

# Alpha of the ground plane drawn over the background video.
DEFAULT_GROUND_PLANE_ALPHA = 0.3
GROUND_PLANE_ALPHA = {"cheetah": 1.0, "walker": 1.0, "hopper": 1.0, "reacher": 0.0}

# The paper's four environments in its order (Table 3, Fig. 1 / 8), for every script; src/evaluation.py
# NORMALIZING_RETURNS and the sweeps' default ENVS follow it (tests/test_consolidation.py checks both).
PAPER_ENVS = ("cheetah-run", "walker-run", "hopper-hop", "humanoid-walk")

# Domains and tasks the port supports, and the camera of each domain's 64 px frames.
SUPPORTED_TASKS = {
    "cheetah": ("run",),
    "walker": ("stand", "walk", "run"),
    "hopper": ("stand", "hop"),
    "humanoid": ("stand", "walk", "run"),
    "finger": ("spin", "turn_easy", "turn_hard"),
    "cartpole": ("balance", "swingup"),
    "ball_in_cup": ("catch",),
    "reacher": ("easy", "hard"),
}
RENDER_CAMERA_ID = {"quadruped": 2}  # others: camera 0

# Skybox texture side: every video frame is resized to SKYBOX_SIZE x SKYBOX_SIZE and shown on all skybox faces.
SKYBOX_SIZE = 800

# Camera distraction, times the difficulty's scale (velocities only when dynamic): angles +- pi/2 * scale around the
# start, radius (1 - CAMERA_ZOOM_IN * scale) to (1 + CAMERA_ZOOM_OUT * scale) times the start radius.
CAMERA_ZOOM_IN = 0.5
CAMERA_ZOOM_OUT = 1.5
CAMERA_VEL_STD = 0.1
CAMERA_MAX_VEL = 0.4
CAMERA_ROLL_STD = 3.141592653589793 / 300
CAMERA_MAX_ROLL_VEL = 3.141592653589793 / 50
CAMERA_MODES = ("release", "corrected")  # src/dcs/suite.py CameraDistraction
# Colour distraction: max_delta = scale; per-step std = COLOR_STEP_STD * scale when dynamic.
COLOR_STEP_STD = 0.03

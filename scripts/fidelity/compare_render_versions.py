"""Do two MuJoCo / dm_control installs render the same frames (and step the same physics)?

The released reference code pins mujoco 3.2.0 (with dm_control 1.0.20 beside it); this project pins mujoco 3.17.0
with dm_control 1.0.50. This script renders the paper's tasks from exactly the same physics states under whichever
install runs it, so the two sets of frames can be compared pixel by pixel (docs/RENDERING-VERSIONS.md).

    # 1. under one install: make the states (reset with a fixed seed, fixed random actions) and render them
    MUJOCO_GL=egl /tmp/mj320/bin/python scripts/fidelity/compare_render_versions.py render --out /tmp/render-3.2.0.npz
    # 2. under the other: load the SAME states (and actions) from the first file and render them
    MUJOCO_GL=egl python scripts/fidelity/compare_render_versions.py render --states /tmp/render-3.2.0.npz \
        --out /tmp/render-3.17.0.npz
    # 3. compare (either python): per-task pixel statistics, compiled model parameters, physics rollouts
    python scripts/fidelity/compare_render_versions.py compare /tmp/render-3.2.0.npz /tmp/render-3.17.0.npz

States are never re-simulated by the second install: qpos, qvel, act, time, ctrl and qacc_warmstart are written into
mjData and mj_forward is called. Frames: `physics.render(h, w, camera_id)` from src/dcs/constants.py RENDER_CAMERA_ID,
"plain" (the suite task as compiled) and "distracted" (the DCS port's operations with fixed values: the camera moved
around its tracked centre of mass and rolled, every material's RGB shifted, the grid translucent, the skybox texture
overwritten and re-uploaded with mjr_uploadTexture). Physics: from the first state, the same actions through
env.step for --physics_steps steps; the qpos trajectories (and 64 px frames of each install's own) are compared.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

VARIANTS = ("plain", "distracted")
DIFF_BINS = (0, 1, 2, 3, 5, 10, 20, 50, 256)  # histogram of per-value |a - b| (uint8 channels): [lo, hi)
ROLLOUT_FRAME_STEPS = (0, 1, 10, 100, 250, 500, 1000)
STATE_KEYS = ("qpos", "qvel", "act", "ctrl", "qacc_warmstart", "time")  # time last

# Compiled model fields that decide what the renderer draws (missing fields are skipped: they differ by version).
MODEL_FIELDS = (
    "nq", "nv", "nu", "na", "nbody", "ngeom", "ncam", "nlight", "nmat", "ntex", "nskin",
    "cam_mode", "cam_bodyid", "cam_pos", "cam_quat", "cam_poscom0", "cam_pos0", "cam_mat0", "cam_fovy", "cam_ipd",
    "cam_resolution", "cam_sensorsize", "cam_intrinsic", "cam_orthographic",
    "light_mode", "light_type", "light_directional", "light_castshadow", "light_active", "light_pos", "light_dir",
    "light_attenuation", "light_cutoff", "light_exponent", "light_ambient", "light_diffuse", "light_specular",
    "light_bulbradius", "light_intensity", "light_range",
    "mat_rgba", "mat_emission", "mat_specular", "mat_shininess", "mat_reflectance", "mat_metallic", "mat_roughness",
    "mat_texrepeat", "mat_texuniform", "mat_texid",
    "tex_type", "tex_width", "tex_height", "tex_nchannel", "tex_adr", "tex_colorspace",
    "geom_type", "geom_size", "geom_rgba", "geom_matid", "geom_group", "geom_bodyid", "geom_pos", "geom_quat",
    "geom_dataid",
    "body_mass", "body_inertia", "dof_damping", "dof_armature", "actuator_gear", "actuator_ctrlrange",
    "opt_timestep",
)  # fmt: skip
VIS_FIELDS = (
    "global_.fovy", "global_.ipd", "global_.azimuth", "global_.elevation", "global_.linewidth", "global_.glow",
    "global_.offwidth", "global_.offheight", "global_.realtime",
    "quality.shadowsize", "quality.offsamples", "quality.numslices", "quality.numstacks", "quality.numquads",
    "headlight.ambient", "headlight.diffuse", "headlight.specular", "headlight.active",
    "map.znear", "map.zfar", "map.haze", "map.shadowclip", "map.shadowscale", "map.fogstart", "map.fogend",
    "rgba.fog", "rgba.haze",
    "stat.extent", "stat.center", "stat.meansize", "stat.meanmass", "stat.meaninertia",
)  # fmt: skip


# --------------------------------------------------------------------------------------------- rendering side


def render_camera(domain: str) -> int:
    from src.dcs.constants import RENDER_CAMERA_ID  # only the rendering side needs the project (and dm_control)

    return RENDER_CAMERA_ID.get(domain, 0)


def versions() -> dict:
    import dm_control
    import mujoco
    import PIL

    try:
        from importlib.metadata import version

        dmc = version("dm_control")
    except Exception:  # noqa: BLE001
        dmc = getattr(dm_control, "__version__", "?")
    out = {"mujoco": mujoco.__version__, "dm_control": dmc, "numpy": np.__version__, "pillow": PIL.__version__}
    return out | {"python": sys.version.split()[0], "MUJOCO_GL": os.environ.get("MUJOCO_GL", "")}


def gl_strings(physics) -> dict:
    """GL vendor / renderer / version of the context dm_control renders with (Mesa llvmpipe on CPU machines)."""
    try:
        from OpenGL import GL

        physics.render(8, 8)
        names = {"vendor": GL.GL_VENDOR, "renderer": GL.GL_RENDERER, "version": GL.GL_VERSION}
        with physics.contexts.gl.make_current() as ctx:
            return ctx.call(lambda: {k: GL.glGetString(v).decode() for k, v in names.items()})
    except Exception as e:  # noqa: BLE001
        return {"error": repr(e)}


def get_state(physics) -> dict:
    return {k: np.array(getattr(physics.data, k)) for k in STATE_KEYS}


def set_state(physics, state: dict) -> None:
    """Writes the state into mjData and runs mj_forward: no simulation step, so every install sees the same pose."""
    for k in STATE_KEYS[:-1]:
        if getattr(physics.data, k).size:  # act: empty without actuator states
            getattr(physics.data, k)[:] = state[k]
    physics.data.time = float(state["time"])
    physics.forward()


def tex_data(model) -> np.ndarray:
    """The texture bytes: MjModel.tex_data (MuJoCo >= 3.2.1 or so), MjModel.tex_rgb before (3.2.0, RGB only)."""
    return model.tex_data if hasattr(model, "tex_data") else model.tex_rgb


def model_params(physics, xml: str) -> dict:
    model = physics.model
    out = {}
    for name in MODEL_FIELDS:
        if name == "opt_timestep":
            out[name] = np.array(model.opt.timestep)
            continue
        if hasattr(model, name):
            out[name] = np.array(getattr(model, name))
    for name in VIS_FIELDS:
        obj = model.stat if name.startswith("stat.") else model.vis
        path = name.split(".")[1:] if name.startswith("stat.") else name.split(".")
        try:
            for part in path:
                obj = getattr(obj, part)
        except AttributeError:
            continue
        out["vis." + name] = np.array(obj)
    out["tex_data_sha"] = np.array(hashlib.sha256(np.asarray(tex_data(model)).tobytes()).hexdigest())
    out["xml_sha"] = np.array(hashlib.sha256(xml.encode()).hexdigest())
    return out


def _spherical(v: np.ndarray) -> np.ndarray:
    r = np.linalg.norm(v)
    return np.array([r, np.arctan2(v[1], v[0]), np.arccos(np.clip(v[2] / r, -1.0, 1.0))])


def _cartesian(s: np.ndarray) -> np.ndarray:
    r, theta, phi = s
    return r * np.array([np.sin(phi) * np.cos(theta), np.sin(phi) * np.sin(theta), np.cos(phi)])


def _look_at(pos: np.ndarray, target: np.ndarray, roll: float) -> np.ndarray:
    forward = (target - pos) / np.linalg.norm(target - pos)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    c, s = np.cos(roll), np.sin(roll)
    right, up = c * right + s * up, -s * right + c * up
    return np.stack([right, up, -forward], axis=1)


class Distractions:
    """Fixed versions of the DCS port's model / data edits (no randomness left: both installs apply the same)."""

    def __init__(self, physics, cam: int, seed: int):
        import mujoco

        from src.dcs.constants import SKYBOX_SIZE  # the side of the port's skybox texture

        self.mujoco, self.side = mujoco, SKYBOX_SIZE
        model = physics.model
        self.cam = cam
        self.body = int(model.cam_bodyid[cam])
        rng = np.random.RandomState(seed)
        self.rgb = np.clip(np.array(model.mat_rgba[:, :3]) + rng.uniform(-0.1, 0.1, (model.nmat, 3)), 0.0, 1.0)
        self.offset = np.array([1.15, 0.2, -0.1])  # radius factor, azimuth and polar angle offsets (rad)
        self.roll = 0.05
        self.tex_id = model.name2id("skybox", "texture")
        self.grid = model.name2id("grid", "material")

    def apply_model(self, physics) -> None:
        model = physics.model
        model.mat_rgba[:, :3] = self.rgb
        if self.grid >= 0:
            model.mat_rgba[self.grid, 3] = 0.3
        side = self.side
        if self.tex_id >= 0 and model.tex_width[self.tex_id] == side:
            model.tex_height[self.tex_id] = side
            y, x = np.mgrid[0:side, 0:side]
            checker = ((x // 40 + y // 40) % 2) * 255
            pattern = np.stack([x * 255 // side, y * 255 // side, checker], axis=-1).astype(np.uint8)
            adr = int(model.tex_adr[self.tex_id])
            tex_data(model)[adr : adr + pattern.size] = pattern.reshape(-1)
            physics.render(8, 8)  # the GL context exists after the first render
            with physics.contexts.gl.make_current() as ctx:
                ctx.call(self.mujoco.mjr_uploadTexture, model.ptr, physics.contexts.mujoco.ptr, self.tex_id)

    def apply_camera(self, physics) -> None:
        """After mj_forward: the camera orbits its tracked subtree centre of mass, as the DCS camera distraction."""
        data = physics.data
        target = np.array(data.subtree_com[self.body])
        start = _spherical(np.array(data.cam_xpos[self.cam]) - target)
        pos = target + _cartesian(start * np.array([self.offset[0], 1.0, 1.0]) + np.array([0.0, *self.offset[1:]]))
        data.cam_xpos[self.cam] = pos
        data.cam_xmat[self.cam] = _look_at(pos, target, self.roll).reshape(-1)


def load_task(task: str, seed: int):
    from dm_control import suite

    domain, name = task.split("-")
    env = suite.load(domain, name, task_kwargs={"random": seed})
    xml, _ = getattr(suite, domain).get_model_and_assets()
    return env, render_camera(domain), xml if isinstance(xml, str) else xml.decode()


def make_states(env, seed: int, num_states: int, stride: int, total_actions: int) -> tuple[list[dict], np.ndarray]:
    spec = env.action_spec()
    rng = np.random.RandomState(seed)
    actions = rng.uniform(spec.minimum, spec.maximum, (max(total_actions, num_states * stride), spec.shape[0]))
    env.reset()
    states = [get_state(env.physics)]
    t = 0
    while len(states) < num_states:
        for _ in range(stride):
            if env.step(actions[t]).last():
                env.reset()
            t += 1
        states.append(get_state(env.physics))
    return states, actions


def render_task(task: str, args, ref) -> dict:
    env, cam, xml = load_task(task, args.seed)
    physics = env.physics
    out = {f"{task}/camera_id": np.array(cam)}
    if ref is None:
        states, actions = make_states(env, args.seed, args.num_states, args.stride, args.physics_steps)
    else:
        arrays = {k: ref[f"{task}/states/{k}"] for k in STATE_KEYS}
        states = [{k: arrays[k][i] for k in STATE_KEYS} for i in range(len(arrays["qpos"]))]
        actions = ref[f"{task}/actions"]
        sizes = {"qpos": physics.model.nq, "qvel": physics.model.nv, "act": physics.model.na}
        for k, n in sizes.items():
            if arrays[k].shape[1] != n:
                raise ValueError(f"{task}: the states file has {k} of size {arrays[k].shape[1]}, this model {n}")
        env.reset()
    for k in states[0]:
        out[f"{task}/states/{k}"] = np.stack([s[k] for s in states])
    out[f"{task}/actions"] = actions
    for k, v in model_params(physics, xml).items():
        out[f"{task}/model/{k}"] = v

    sizes = (64, 480) if args.big else (64,)
    frames = {(v, s): [] for v in VARIANTS for s in sizes}
    for state in states:  # plain
        set_state(physics, state)
        for s in sizes:
            frames["plain", s].append(physics.render(s, s, camera_id=cam))
    distract = Distractions(physics, cam, args.seed)
    distract.apply_model(physics)
    for state in states:
        set_state(physics, state)
        distract.apply_camera(physics)
        for s in sizes:
            frames["distracted", s].append(physics.render(s, s, camera_id=cam))
    for (v, s), f in frames.items():
        out[f"{task}/frames/{v}/{s}"] = np.stack(f)

    if args.physics_steps > 0:  # a fresh env: the plain model, the first state, the same actions
        env, cam, _ = load_task(task, args.seed)
        physics = env.physics
        env.reset()
        set_state(physics, states[0])
        qpos, qvel, rewards, shots = [np.array(physics.data.qpos)], [np.array(physics.data.qvel)], [], {}
        for t in range(args.physics_steps + 1):
            if t in ROLLOUT_FRAME_STEPS:
                shots[t] = physics.render(64, 64, camera_id=cam)
            if t == args.physics_steps:
                break
            step = env.step(actions[t])
            rewards.append(step.reward or 0.0)
            qpos.append(np.array(physics.data.qpos))
            qvel.append(np.array(physics.data.qvel))
            if step.last() and t + 1 < args.physics_steps:
                raise RuntimeError(f"{task}: the episode ended after {t + 1} steps; use fewer --physics_steps")
        out[f"{task}/rollout/qpos"] = np.stack(qpos)
        out[f"{task}/rollout/qvel"] = np.stack(qvel)
        out[f"{task}/rollout/reward"] = np.array(rewards)
        out[f"{task}/rollout/frame_steps"] = np.array(sorted(shots))
        out[f"{task}/rollout/frames"] = np.stack([shots[t] for t in sorted(shots)])
    return out


def cmd_render(args) -> None:
    from src.dcs.constants import PAPER_ENVS

    ref = np.load(args.states) if args.states else None
    tasks = args.tasks or list(PAPER_ENVS)
    if ref is not None:
        meta_ref = json.loads(str(ref["meta"]))
        tasks = [t for t in tasks if t in meta_ref["tasks"]]
    out: dict = {}
    meta = {"versions": versions(), "tasks": list(tasks), "seed": args.seed, "states_from": args.states or "self"}
    for task in tasks:
        out.update(render_task(task, args, ref))
        if "gl" not in meta:
            from dm_control import suite

            env = suite.load(*task.split("-"))
            meta["gl"] = gl_strings(env.physics)
        print(f"rendered {task}", flush=True)
    out["meta"] = np.array(json.dumps(meta))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **out)
    print(json.dumps(meta, indent=1))
    print(f"wrote {args.out}")


# --------------------------------------------------------------------------------------------- comparison side


def frame_stats(a: np.ndarray, b: np.ndarray) -> dict:
    """Pixel statistics of two uint8 frame stacks [N, H, W, 3]; a pixel differs when any channel does."""
    if a.shape != b.shape:
        raise ValueError(f"frame shapes differ: {a.shape} vs {b.shape}")
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    per_pixel = diff.max(axis=-1)
    hist, _ = np.histogram(diff, bins=DIFF_BINS)
    mse = float((diff.astype(np.float64) ** 2).mean())
    return {
        "frames": int(a.shape[0]),
        "max": int(diff.max()),
        "mean": float(diff.mean()),
        "frac_pixels_differ": float((per_pixel > 0).mean()),
        "frac_pixels_gt2": float((per_pixel > 2).mean()),
        "frac_pixels_gt10": float((per_pixel > 10).mean()),
        "psnr_db": float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse)),
        "hist": {f"[{lo},{hi})": int(n) for lo, hi, n in zip(DIFF_BINS[:-1], DIFF_BINS[1:], hist, strict=True)},
        "per_frame_max": [int(m) for m in diff.reshape(len(diff), -1).max(axis=1)],
    }


def model_diffs(a, b, task: str) -> dict:
    """Fields of the compiled models that differ: {field: description}."""
    prefix = f"{task}/model/"
    ka = {k[len(prefix) :] for k in a.files if k.startswith(prefix)}
    kb = {k[len(prefix) :] for k in b.files if k.startswith(prefix)}
    out = {}
    for k in sorted(ka ^ kb):
        out[k] = "only in " + ("A" if k in ka else "B")
    for k in sorted(ka & kb):
        x, y = a[prefix + k], b[prefix + k]
        if x.dtype.kind in "US" or y.dtype.kind in "US":
            if str(x) != str(y):
                out[k] = "differs"
        elif x.shape != y.shape:
            out[k] = f"shape {x.shape} vs {y.shape}"
        elif not np.array_equal(x, y):
            d = np.abs(x.astype(np.float64) - y.astype(np.float64))
            out[k] = f"max |diff| {d.max():.3g} at {np.unravel_index(d.argmax(), d.shape)}: {x.flat[d.argmax()]!r} vs "
            out[k] += f"{y.flat[d.argmax()]!r}"
    return out


def physics_stats(a, b, task: str) -> dict | None:
    key = f"{task}/rollout/qpos"
    if key not in a.files or key not in b.files:
        return None
    qa, qb = a[key], b[key]
    n = min(len(qa), len(qb))
    err = np.abs(qa[:n] - qb[:n]).max(axis=1)  # per step, over joints
    tols = (1e-12, 1e-9, 1e-6, 1e-3, 1e-1)
    first = {f"{tol:g}": int(np.argmax(err > tol)) if (err > tol).any() else None for tol in tols}
    ra, rb = a[f"{task}/rollout/reward"], b[f"{task}/rollout/reward"]
    steps = [s for s in (1, 10, 100, 250, 500, 1000) if s < n]
    out = {"steps": n - 1, "max_qpos_diff_at_step": {str(s): float(err[s]) for s in steps}}
    out |= {"first_step_diff_above": first, "return_A": float(ra.sum()), "return_B": float(rb.sum())}
    fa, fb = a[f"{task}/rollout/frames"], b[f"{task}/rollout/frames"]
    if fa.shape == fb.shape:
        steps_f = a[f"{task}/rollout/frame_steps"]
        diff = np.abs(fa.astype(np.int16) - fb.astype(np.int16))
        out["own_trajectory_frames_mean_abs_diff"] = {
            str(int(s)): float(d.mean()) for s, d in zip(steps_f, diff, strict=True)
        }
    return out


def compare(path_a: str, path_b: str) -> dict:
    a, b = np.load(path_a), np.load(path_b)
    meta_a, meta_b = json.loads(str(a["meta"])), json.loads(str(b["meta"]))
    report = {"A": {"file": path_a, **meta_a}, "B": {"file": path_b, **meta_b}, "tasks": {}}
    for task in [t for t in meta_a["tasks"] if t in meta_b["tasks"]]:
        entry: dict = {}
        sa, sb = a[f"{task}/states/qpos"], b[f"{task}/states/qpos"]
        entry["same_states"] = bool(sa.shape == sb.shape and np.array_equal(sa, sb))
        for key in sorted(k for k in a.files if k.startswith(f"{task}/frames/")):
            if key in b.files:
                entry[key[len(task) + 1 :]] = frame_stats(a[key], b[key])
        entry["model_diffs"] = model_diffs(a, b, task)
        entry["physics"] = physics_stats(a, b, task)
        report["tasks"][task] = entry
    return report


def print_report(report: dict) -> None:
    for side in ("A", "B"):
        v = report[side]["versions"]
        print(f"{side}: {report[side]['file']}: mujoco {v['mujoco']}, dm_control {v['dm_control']}, numpy {v['numpy']}"
              f", GL {report[side].get('gl', {}).get('renderer', '?')}")  # fmt: skip
    header = f"{'task':15s} {'frames':20s} {'n':>3s} {'max':>4s} {'mean':>8s} {'%px>0':>8s} {'%px>2':>8s} "
    header += f"{'%px>10':>8s} {'PSNR dB':>8s}"
    print(header)
    for task, entry in report["tasks"].items():
        if not entry["same_states"]:
            print(f"{task}: WARNING: the two files hold different states")
        for key, s in entry.items():
            if not key.startswith("frames/"):
                continue
            print(f"{task:15s} {key[7:]:20s} {s['frames']:3d} {s['max']:4d} {s['mean']:8.4f} "
                  f"{100 * s['frac_pixels_differ']:8.3f} {100 * s['frac_pixels_gt2']:8.3f} "
                  f"{100 * s['frac_pixels_gt10']:8.3f} {s['psnr_db']:8.2f}")  # fmt: skip
    for task, entry in report["tasks"].items():
        print(f"\n{task}: histogram of |A-B| per channel value (64 px plain): {entry['frames/plain/64']['hist']}")
        diffs = entry["model_diffs"]
        print(f"{task}: compiled model fields that differ: {len(diffs)}")
        for k, d in diffs.items():
            print(f"    {k}: {d}")
        p = entry["physics"]
        if p:
            print(f"{task}: physics over {p['steps']} steps from the same state: max |qpos A-B| at step "
                  f"{p['max_qpos_diff_at_step']}; first step above tol {p['first_step_diff_above']}; "
                  f"return A {p['return_A']:.2f} B {p['return_B']:.2f}")  # fmt: skip
            if "own_trajectory_frames_mean_abs_diff" in p:
                print(
                    f"    mean |A-B| of 64 px frames of each install's own trajectory, by step: "
                    f"{ {k: round(v, 3) for k, v in p['own_trajectory_frames_mean_abs_diff'].items()} }"
                )


def save_pngs(path_a: str, path_b: str, folder: str) -> None:
    """One PNG per task and variant: the A frames, the B frames, and |A - B| x 8, row by row."""
    from PIL import Image

    a, b = np.load(path_a), np.load(path_b)
    Path(folder).mkdir(parents=True, exist_ok=True)
    for key in a.files:
        if "/frames/" not in key or key not in b.files:
            continue
        fa, fb = a[key], b[key]
        diff = np.clip(np.abs(fa.astype(np.int16) - fb.astype(np.int16)) * 8, 0, 255).astype(np.uint8)
        rows = [np.concatenate(list(x), axis=1) for x in (fa, fb, diff)]
        Image.fromarray(np.concatenate(rows, axis=0)).save(Path(folder) / (key.replace("/", "_") + ".png"))


def cmd_compare(args) -> int:
    report = compare(args.a, args.b)
    print_report(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
        print(f"wrote {args.json}")
    if args.png_dir:
        save_pngs(args.a, args.b, args.png_dir)
        print(f"wrote PNGs to {args.png_dir}")
    if args.fail_above is not None:
        worst = max(s["max"] for e in report["tasks"].values() for k, s in e.items() if k.startswith("frames/"))
        if worst > args.fail_above:
            print(f"FAIL: a pixel differs by {worst} > {args.fail_above}")
            return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("render", help="render fixed states under this install")
    r.add_argument("--out", required=True)
    r.add_argument("--states", help="an .npz written by `render` under another install: render ITS states")
    r.add_argument("--tasks", nargs="+", help="<domain>-<task> names (default: the paper's four, PAPER_ENVS)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--num_states", type=int, default=10)
    r.add_argument("--stride", type=int, default=20, help="control steps between two rendered states")
    r.add_argument("--physics_steps", type=int, default=1000, help="0: no physics rollout")
    r.add_argument("--no_big", dest="big", action="store_false", help="64 px only (no 480 px frames)")
    c = sub.add_parser("compare", help="compare two files written by `render`")
    c.add_argument("a")
    c.add_argument("b")
    c.add_argument("--json", help="write the full report here")
    c.add_argument("--png_dir", help="write A / B / |A-B|x8 strips here")
    c.add_argument("--fail_above", type=int, help="exit 1 when a pixel differs by more than this")
    args = parser.parse_args(argv)
    if args.cmd == "render":
        cmd_render(args)
        return 0
    return cmd_compare(args)


if __name__ == "__main__":
    sys.exit(main())

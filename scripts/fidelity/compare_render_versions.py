"""Do two MuJoCo / dm_control installs render the same frames and step the same physics? (docs/RENDERING-VERSIONS.md)

The release pins mujoco 3.2.0 (dm_control 1.0.20 beside it), this project 3.17.0 (dm_control 1.0.50). `render`
renders the paper's tasks from fixed physics states under the install that runs it; with --states, the states of the
other install's file, written into mjData and mj_forward called (never re-simulated). Frames: "plain" (the suite task)
and "distracted" (the DCS port's edits with fixed values: the camera orbited and rolled, material colours shifted, the
grid translucent, the skybox texture overwritten and re-uploaded). Physics: the same actions through env.step from the
first state. `compare` reports pixel statistics, compiled-model differences and the rollouts' divergence per task.

    MUJOCO_GL=egl /tmp/mj320/bin/python scripts/fidelity/compare_render_versions.py render --out /tmp/render-3.2.0.npz
    MUJOCO_GL=egl python scripts/fidelity/compare_render_versions.py render --states /tmp/render-3.2.0.npz \
        --out /tmp/render-3.17.0.npz
    python scripts/fidelity/compare_render_versions.py compare /tmp/render-3.2.0.npz /tmp/render-3.17.0.npz
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import sys
from importlib.metadata import version
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
CAMERA_OFFSET, CAMERA_ROLL = (1.15, 0.2, -0.1), 0.05  # orbit radius factor, azimuth and polar offsets, roll (rad)
# Model fields that decide what is drawn (skipped where this version lacks them), then model.vis / model.stat (vis.*).
MODEL_FIELDS = """
nq nv nu na nbody ngeom ncam nlight nmat ntex nskin cam_mode cam_bodyid cam_pos cam_quat cam_poscom0 cam_pos0 cam_mat0
cam_fovy cam_ipd cam_resolution cam_sensorsize cam_intrinsic cam_orthographic light_mode light_type light_directional
light_castshadow light_active light_pos light_dir light_attenuation light_cutoff light_exponent light_ambient
light_diffuse light_specular light_bulbradius light_intensity light_range mat_rgba mat_emission mat_specular
mat_shininess mat_reflectance mat_metallic mat_roughness mat_texrepeat mat_texuniform mat_texid tex_type tex_width
tex_height tex_nchannel tex_adr tex_colorspace geom_type geom_size geom_rgba geom_matid geom_group geom_bodyid geom_pos
geom_quat geom_dataid body_mass body_inertia dof_damping dof_armature actuator_gear actuator_ctrlrange
""".split()
VIS_FIELDS = """
global_.fovy global_.ipd global_.azimuth global_.elevation global_.linewidth global_.glow global_.offwidth
global_.offheight global_.realtime quality.shadowsize quality.offsamples quality.numslices quality.numstacks
quality.numquads headlight.ambient headlight.diffuse headlight.specular headlight.active map.znear map.zfar map.haze
map.shadowclip map.shadowscale map.fogstart map.fogend rgba.fog rgba.haze
stat.extent stat.center stat.meansize stat.meanmass stat.meaninertia
""".split()


# --------------------------------------------------------------------------------------------- rendering side


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


def model_params(model, xml: str) -> dict:
    paths = {f: f for f in MODEL_FIELDS} | {"opt_timestep": "opt.timestep"}
    paths |= {f"vis.{f}": f if f.startswith("stat.") else f"vis.{f}" for f in VIS_FIELDS}
    out = {}
    for key, path in paths.items():
        with contextlib.suppress(AttributeError):
            obj = model
            for part in path.split("."):
                obj = getattr(obj, part)
            out[key] = np.array(obj)
    out["tex_data_sha"] = np.array(hashlib.sha256(np.asarray(tex_data(model)).tobytes()).hexdigest())
    return out | {"xml_sha": np.array(hashlib.sha256(xml.encode()).hexdigest())}


def distract_model(physics, seed: int) -> None:
    """The DCS port's model edits with fixed values (same in both installs): materials' RGB shifted, grid
    translucent, skybox overwritten with a gradient and checker pattern and re-uploaded."""
    import mujoco

    from src.dcs.constants import SKYBOX_SIZE as side  # the side of the port's skybox texture

    model = physics.model
    shift = np.random.RandomState(seed).uniform(-0.1, 0.1, (model.nmat, 3))
    model.mat_rgba[:, :3] = np.clip(np.array(model.mat_rgba[:, :3]) + shift, 0.0, 1.0)
    grid, tex = model.name2id("grid", "material"), model.name2id("skybox", "texture")
    if grid >= 0:
        model.mat_rgba[grid, 3] = 0.3
    if tex >= 0 and model.tex_width[tex] == side:
        model.tex_height[tex] = side
        y, x = np.mgrid[0:side, 0:side]
        pattern = np.stack([x * 255 // side, y * 255 // side, ((x // 40 + y // 40) % 2) * 255], axis=-1)
        adr = int(model.tex_adr[tex])
        tex_data(model)[adr : adr + pattern.size] = pattern.astype(np.uint8).reshape(-1)
        physics.render(8, 8)  # the GL context exists after the first render
        with physics.contexts.gl.make_current() as ctx:
            ctx.call(mujoco.mjr_uploadTexture, model.ptr, physics.contexts.mujoco.ptr, tex)


def distract_camera(physics, cam: int) -> None:
    """After mj_forward: the camera orbits its tracked subtree's centre of mass and rolls (CAMERA_OFFSET)."""
    data = physics.data
    target = np.array(data.subtree_com[int(physics.model.cam_bodyid[cam])])
    v = np.array(data.cam_xpos[cam]) - target
    r, theta, phi = np.linalg.norm(v), np.arctan2(v[1], v[0]), np.arccos(np.clip(v[2] / np.linalg.norm(v), -1.0, 1.0))
    r, theta, phi = r * CAMERA_OFFSET[0], theta + CAMERA_OFFSET[1], phi + CAMERA_OFFSET[2]
    pos = target + r * np.array([np.sin(phi) * np.cos(theta), np.sin(phi) * np.sin(theta), np.cos(phi)])
    forward = (target - pos) / np.linalg.norm(target - pos)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    c, s = np.cos(CAMERA_ROLL), np.sin(CAMERA_ROLL)
    right, up = c * right + s * up, -s * right + c * up
    data.cam_xpos[cam] = pos
    data.cam_xmat[cam] = np.stack([right, up, -forward], axis=1).reshape(-1)


def load_task(task: str, seed: int):
    """(the suite env, its camera: RENDER_CAMERA_ID of src/dcs/constants.py, the task's XML)."""
    from dm_control import suite

    from src.dcs.constants import RENDER_CAMERA_ID  # only the rendering side needs the project (and dm_control)

    domain, name = task.split("-")
    env = suite.load(domain, name, task_kwargs={"random": seed})
    xml, _ = getattr(suite, domain).get_model_and_assets()
    return env, RENDER_CAMERA_ID.get(domain, 0), xml if isinstance(xml, str) else xml.decode()


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


def rollout(task: str, args, state: dict, actions: np.ndarray) -> dict:
    """A fresh env (plain model) from `state` with the same actions: qpos, qvel, rewards, 64 px frames."""
    env, cam, _ = load_task(task, args.seed)
    physics = env.physics
    env.reset()
    set_state(physics, state)
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
    out = {"qpos": np.stack(qpos), "qvel": np.stack(qvel), "reward": np.array(rewards)}
    out |= {"frame_steps": np.array(sorted(shots)), "frames": np.stack([shots[t] for t in sorted(shots)])}
    return {f"{task}/rollout/{k}": v for k, v in out.items()}


def render_task(task: str, args, ref) -> dict:
    env, cam, xml = load_task(task, args.seed)
    physics = env.physics
    if ref is None:
        states, actions = make_states(env, args.seed, args.num_states, args.stride, args.physics_steps)
    else:
        arrays = {k: ref[f"{task}/states/{k}"] for k in STATE_KEYS}
        for k, n in {"qpos": physics.model.nq, "qvel": physics.model.nv, "act": physics.model.na}.items():
            if arrays[k].shape[1] != n:
                raise ValueError(f"{task}: the states file has {k} of size {arrays[k].shape[1]}, this model {n}")
        states = [{k: v[i] for k, v in arrays.items()} for i in range(len(arrays["qpos"]))]
        actions = ref[f"{task}/actions"]
        env.reset()
    out = {f"{task}/camera_id": np.array(cam), f"{task}/actions": actions}
    out |= {f"{task}/states/{k}": np.stack([s[k] for s in states]) for k in STATE_KEYS}
    out |= {f"{task}/model/{k}": v for k, v in model_params(physics.model, xml).items()}
    for variant in VARIANTS:
        if variant == "distracted":
            distract_model(physics, args.seed)
        frames = {s: [] for s in ((64, 480) if args.big else (64,))}
        for state in states:
            set_state(physics, state)
            if variant == "distracted":
                distract_camera(physics, cam)
            for s in frames:
                frames[s].append(physics.render(s, s, camera_id=cam))
        out |= {f"{task}/frames/{variant}/{s}": np.stack(f) for s, f in frames.items()}
    return out | (rollout(task, args, states[0], actions) if args.physics_steps > 0 else {})


def cmd_render(args) -> None:
    from src.dcs.constants import PAPER_ENVS

    ref = np.load(args.states) if args.states else None
    tasks = args.tasks or list(PAPER_ENVS)
    if ref is not None:
        tasks = [t for t in tasks if t in json.loads(str(ref["meta"]))["tasks"]]
    versions = {p: version(p) for p in ("mujoco", "dm_control", "numpy", "pillow")}
    versions |= {"python": sys.version.split()[0], "MUJOCO_GL": os.environ.get("MUJOCO_GL", "")}
    meta = {"versions": versions, "tasks": tasks, "seed": args.seed, "states_from": args.states or "self"}
    out: dict = {}
    for task in tasks:
        out.update(render_task(task, args, ref))
        if "gl" not in meta:
            meta["gl"] = gl_strings(load_task(task, 0)[0].physics)
        print(f"rendered {task}", flush=True)
    out["meta"] = np.array(json.dumps(meta))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **out)
    print(json.dumps(meta, indent=1))
    print(f"wrote {args.out}")


# --------------------------------------------------------------------------------------------- comparison side


def abs_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.int16) - b.astype(np.int16))


def frame_stats(a: np.ndarray, b: np.ndarray) -> dict:
    """Pixel statistics of two uint8 frame stacks [N, H, W, 3]; a pixel differs when any channel does."""
    if a.shape != b.shape:
        raise ValueError(f"frame shapes differ: {a.shape} vs {b.shape}")
    diff = abs_diff(a, b)
    per_pixel = diff.max(axis=-1)
    hist, _ = np.histogram(diff, bins=DIFF_BINS)
    mse = float((diff.astype(np.float64) ** 2).mean())
    return {
        "frames": int(a.shape[0]),
        "max": int(diff.max()),
        "mean": float(diff.mean()),
        **{f"frac_pixels_{k}": float((per_pixel > t).mean()) for k, t in (("differ", 0), ("gt2", 2), ("gt10", 10))},
        "psnr_db": float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse)),
        "hist": {f"[{lo},{hi})": int(n) for lo, hi, n in zip(DIFF_BINS[:-1], DIFF_BINS[1:], hist, strict=True)},
        "per_frame_max": [int(m) for m in diff.reshape(len(diff), -1).max(axis=1)],
    }


def model_diffs(a, b, task: str) -> dict:
    """Fields of the compiled models that differ: {field: description}."""
    prefix = f"{task}/model/"
    ka, kb = ({k.removeprefix(prefix) for k in f.files if k.startswith(prefix)} for f in (a, b))
    out = {k: "only in " + ("A" if k in ka else "B") for k in sorted(ka ^ kb)}
    for k in sorted(ka & kb):
        x, y = a[prefix + k], b[prefix + k]
        if x.dtype.kind in "US" or y.dtype.kind in "US":
            if str(x) != str(y):
                out[k] = "differs"
        elif x.shape != y.shape:
            out[k] = f"shape {x.shape} vs {y.shape}"
        elif not np.array_equal(x, y):
            d = np.abs(x.astype(np.float64) - y.astype(np.float64))
            i = d.argmax()
            out[k] = f"max |diff| {d.max():.3g} at {np.unravel_index(i, d.shape)}: {x.flat[i]!r} vs {y.flat[i]!r}"
    return out


def physics_stats(a, b, task: str) -> dict | None:
    key = f"{task}/rollout/qpos"
    if key not in a.files or key not in b.files:
        return None
    n = min(len(a[key]), len(b[key]))
    err = np.abs(a[key][:n] - b[key][:n]).max(axis=1)  # per step, over joints
    tols = (1e-12, 1e-9, 1e-6, 1e-3, 1e-1)
    first = {f"{tol:g}": int(np.argmax(err > tol)) if (err > tol).any() else None for tol in tols}
    steps = [s for s in (1, 10, 100, 250, 500, 1000) if s < n]
    out = {"steps": n - 1, "max_qpos_diff_at_step": {str(s): float(err[s]) for s in steps}}
    out |= {"first_step_diff_above": first}
    out |= {f"return_{side}": float(f[f"{task}/rollout/reward"].sum()) for side, f in (("A", a), ("B", b))}
    fa, fb = a[f"{task}/rollout/frames"], b[f"{task}/rollout/frames"]
    if fa.shape == fb.shape:
        steps_f = a[f"{task}/rollout/frame_steps"]
        diffs = zip(steps_f, abs_diff(fa, fb), strict=True)
        out["own_trajectory_frames_mean_abs_diff"] = {str(int(s)): float(d.mean()) for s, d in diffs}
    return out


def compare(path_a: str, path_b: str) -> dict:
    a, b = np.load(path_a), np.load(path_b)
    meta_a, meta_b = json.loads(str(a["meta"])), json.loads(str(b["meta"]))
    report = {"A": {"file": path_a, **meta_a}, "B": {"file": path_b, **meta_b}, "tasks": {}}
    for task in [t for t in meta_a["tasks"] if t in meta_b["tasks"]]:
        sa, sb = a[f"{task}/states/qpos"], b[f"{task}/states/qpos"]
        entry: dict = {"same_states": bool(sa.shape == sb.shape and np.array_equal(sa, sb))}
        for key in sorted(k for k in a.files if k.startswith(f"{task}/frames/") and k in b.files):
            entry[key.removeprefix(f"{task}/")] = frame_stats(a[key], b[key])
        report["tasks"][task] = entry | {"model_diffs": model_diffs(a, b, task), "physics": physics_stats(a, b, task)}
    return report


def print_report(report: dict) -> None:
    for side in ("A", "B"):
        v = report[side]["versions"]
        print(f"{side}: {report[side]['file']}: mujoco {v['mujoco']}, dm_control {v['dm_control']}, numpy {v['numpy']}"
              f", GL {report[side].get('gl', {}).get('renderer', '?')}")  # fmt: skip
    header = f"{'task':15s} {'frames':20s} {'n':>3s} {'max':>4s} {'mean':>8s} {'%px>0':>8s} {'%px>2':>8s} "
    print(header + f"{'%px>10':>8s} {'PSNR dB':>8s}")
    for task, entry in report["tasks"].items():
        if not entry["same_states"]:
            print(f"{task}: WARNING: the two files hold different states")
        for key, s in ((k, s) for k, s in entry.items() if k.startswith("frames/")):
            print(f"{task:15s} {key[7:]:20s} {s['frames']:3d} {s['max']:4d} {s['mean']:8.4f} "
                  f"{100 * s['frac_pixels_differ']:8.3f} {100 * s['frac_pixels_gt2']:8.3f} "
                  f"{100 * s['frac_pixels_gt10']:8.3f} {s['psnr_db']:8.2f}")  # fmt: skip
    for task, entry in report["tasks"].items():
        print(f"\n{task}: histogram of |A-B| per channel value (64 px plain): {entry['frames/plain/64']['hist']}")
        print(f"{task}: compiled model fields that differ: {len(entry['model_diffs'])}")
        for k, d in entry["model_diffs"].items():
            print(f"    {k}: {d}")
        p = entry["physics"]
        if p:
            print(f"{task}: physics over {p['steps']} steps from the same state: max |qpos A-B| at step "
                  f"{p['max_qpos_diff_at_step']}; first step above tol {p['first_step_diff_above']}; "
                  f"return A {p['return_A']:.2f} B {p['return_B']:.2f}")  # fmt: skip
            if "own_trajectory_frames_mean_abs_diff" in p:
                own = {k: round(v, 3) for k, v in p["own_trajectory_frames_mean_abs_diff"].items()}
                print(f"    mean |A-B| of 64 px frames of each install's own trajectory, by step: {own}")


def save_pngs(path_a: str, path_b: str, folder: str) -> None:
    """One PNG per task and variant: the A frames, the B frames, and |A - B| x 8, row by row."""
    from PIL import Image

    a, b = np.load(path_a), np.load(path_b)
    Path(folder).mkdir(parents=True, exist_ok=True)
    for key in [k for k in a.files if "/frames/" in k and k in b.files]:
        diff = np.clip(abs_diff(a[key], b[key]) * 8, 0, 255).astype(np.uint8)
        rows = [np.concatenate(list(x), axis=1) for x in (a[key], b[key], diff)]
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

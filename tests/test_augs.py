"""LAOM stage-1 augmentations (src/augs.py) against the released code's rules.

The reference warps below restate torchvision's tensor code path (pad, RandomRotation / RandomPerspective on a batch
tensor with fill 0, centre crop) step by step, independently of src/augs.py; the pads and magnitudes are spelled out
here so that a wrong constant in src/augs.py fails.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from src.augs import AUGMENTATIONS, Augmenter, AugParams, perspective_endpoints, release_pads

SIZE = 64
SHIFT_PAD, ROTATE_PAD, PERSP_PAD = 14, 17, 30  # the release's pads at 64 px


# ---------------------------------------------------------------- reference: torchvision's tensor path, one image set


def ref_pad(x, pad):
    return F.pad(x, (pad,) * 4, mode="replicate")  # torchvision pad(padding_mode="edge")


def ref_center_crop(x, size):
    top = int(round((x.shape[-1] - size) / 2.0))
    return x[..., top : top + size, top : top + size]


def ref_grid_transform(img, grid):
    """torchvision _apply_grid_transform, bilinear, fill 0: a ones channel marks what was sampled inside."""
    img = torch.cat([img, torch.ones_like(img[:, :1])], 1)
    out = F.grid_sample(img, grid.expand(len(img), -1, -1, -1), "bilinear", padding_mode="zeros", align_corners=False)
    mask = out[:, -1:]
    return out[:, :-1] * mask + (1.0 - mask) * 0.0


def ref_rotate(img, angle):
    """torchvision F.rotate(img, angle, BILINEAR, expand=False, center=None, fill=0)."""
    s = img.shape[-1]
    rot = math.radians(-angle)  # F.rotate passes -angle to _get_inverse_affine_matrix
    theta = torch.tensor([[math.cos(rot), math.sin(rot), 0.0], [-math.sin(rot), math.cos(rot), 0.0]])
    k = torch.linspace(-s * 0.5 + 0.5, s * 0.5 - 0.5, s)
    base = torch.stack([k.expand(s, s), k[:, None].expand(s, s), torch.ones(s, s)], dim=-1)  # (x, y, 1)
    grid = base.reshape(1, s * s, 3) @ (theta.T / torch.tensor([0.5 * s, 0.5 * s]))
    return ref_grid_transform(img, grid.reshape(1, s, s, 2))


def ref_perspective(img, endpoints):
    """torchvision F.perspective(img, startpoints, endpoints, BILINEAR, fill=0) with the image corners as start."""
    s = img.shape[-1]
    start = [[0, 0], [s - 1, 0], [s - 1, s - 1], [0, s - 1]]
    a = torch.zeros(8, 8, dtype=torch.float64)
    for i, ((x, y), (u, v)) in enumerate(zip(endpoints, start, strict=True)):
        a[2 * i] = torch.tensor([x, y, 1, 0, 0, 0, -u * x, -u * y])
        a[2 * i + 1] = torch.tensor([0, 0, 0, x, y, 1, -v * x, -v * y])
    c = torch.linalg.lstsq(a, torch.tensor(start, dtype=torch.float64).view(8), driver="gels").solution.float()
    k = torch.linspace(0.5, s - 0.5, s)
    base = torch.stack([k.expand(s, s), k[:, None].expand(s, s), torch.ones(s, s)], dim=-1).reshape(1, s * s, 3)
    num = base @ (torch.stack([c[0:3], c[3:6]]).T / torch.tensor([0.5 * s, 0.5 * s]))
    den = base @ torch.stack([torch.cat([c[6:8], torch.ones(1)])] * 2).T
    return ref_grid_transform(img, (num / den - 1.0).reshape(1, s, s, 2))


def ref_augment(img, name, shift, angle, endpoints):
    """The release's composite: each op pads the previous output, warps, and crops back to 64 px."""
    for op in name.split("-"):
        if op == "shift":
            img = ref_pad(img, SHIFT_PAD)[..., shift[1] : shift[1] + SIZE, shift[0] : shift[0] + SIZE]
        elif op == "rotate":
            img = ref_center_crop(ref_rotate(ref_pad(img, ROTATE_PAD), angle), SIZE)
        elif op == "perspective":
            img = ref_center_crop(ref_perspective(ref_pad(img, PERSP_PAD), endpoints), SIZE)
    return img


def params_for(choices, shift, angle, endpoints):
    """AugParams of one call where every image i picked choices[i], with the given shared angle / corners."""
    n = len(choices)
    return AugParams(
        choice=torch.tensor([AUGMENTATIONS.index(c) for c in choices]),
        chunk=torch.zeros(n, dtype=torch.long),
        shift=torch.tensor(shift).expand(n, 2),
        angle=torch.full((1, 8), float(angle)),
        endpoints=torch.tensor(endpoints).expand(1, 8, 4, 2),
    )


def coordinate_images(n, size=SIZE):
    """[n, 2, S, S]: channel 0 holds each pixel's column, channel 1 its row (a unique marker per pixel)."""
    k = torch.arange(size, dtype=torch.float32)
    return torch.stack([k.expand(size, size), k[:, None].expand(size, size)]).expand(n, 2, size, size).clone()


def recovered_angles(out):
    """Rotation angles (degrees) of warped coordinate images, from the sampled coordinates near the centre."""
    du = out[:, 0, 31, 41] - out[:, 0, 31, 21]
    dv = out[:, 1, 31, 41] - out[:, 1, 31, 21]
    return torch.rad2deg(torch.atan2(dv, du))


# ---------------------------------------------------------------- tests


def test_release_pads_and_other_sizes():
    assert release_pads(64) == (14, 17, 30)
    assert release_pads(128) == release_pads(256) == (28, 28, 30)
    assert release_pads(96) == (21, 26, 45)  # other sizes: the 64 px pads scaled with the size


def test_identity_returns_the_image_exactly():
    for size in (64, 84):
        x = torch.randn(6, 9, size, size)
        assert torch.equal(Augmenter(names=("identity",))(x), x)


def test_every_choice_matches_the_torchvision_reference_for_fixed_parameters():
    torch.manual_seed(0)
    x = torch.rand(1, 9, SIZE, SIZE) * 2 - 1
    corners = [  # inward moves up to int(0.5 * (124 // 2)) = 31: the fill-0 region reaches the 64 px crop
        [[31, 31], [123 - 31, 0], [123 - 31, 123 - 31], [0, 123 - 12]],
        [[3, 17], [123 - 8, 25], [123 - 30, 123 - 2], [19, 123 - 29]],
    ]
    for shift, angle, endpoints in [
        ((0, 28), 33.3, corners[0]),
        ((25, 3), -89.5, corners[1]),
        ((14, 7), 71.0, corners[1]),
    ]:
        params = params_for(AUGMENTATIONS, shift, angle, endpoints)
        out = Augmenter().apply(x.expand(8, -1, -1, -1), params)
        for i, name in enumerate(AUGMENTATIONS):
            ref = ref_augment(x, name, shift, angle, endpoints)
            assert torch.allclose(out[i], ref[0], atol=2e-4, rtol=0), (name, (out[i] - ref[0]).abs().max())
    grey = Augmenter().apply(torch.ones(1, 1, SIZE, SIZE), params_for(["perspective"], (0, 0), 0.0, corners[0]))
    assert grey[0, 0, 0, 0] < 0.5  # the fill (0, grey on [-1, 1] images) enters the crop


def test_composite_order_matters():
    x = torch.rand(2, 3, SIZE, SIZE) * 2 - 1
    params = params_for(["shift-rotate", "rotate-shift"], (2, 26), 40.0, [[0, 0], [123, 0], [123, 123], [0, 123]])
    out = Augmenter().apply(x[:1].expand(2, -1, -1, -1), params)
    assert (out[0] - out[1]).abs().max() > 0.1


def test_rotation_at_64_px_never_samples_outside_the_padded_image():
    ones = torch.ones(1, 1, SIZE, SIZE)
    for angle in (-90.0, -45.0, 17.0, 45.0, 89.9):
        out = Augmenter().apply(ones, params_for(["rotate"], (0, 0), angle, [[0, 0], [123, 0], [123, 123], [0, 123]]))
        assert torch.allclose(out, ones, atol=1e-5)


def test_shift_reaches_14_px_per_axis_drawn_per_image_with_replicate_padding():
    torch.manual_seed(1)
    aug = Augmenter(names=("shift",))
    x = coordinate_images(1024)
    out = torch.cat([aug(x) for _ in range(4)])
    dx, dy = out[:, 0, 32, 32] - 32, out[:, 1, 32, 32] - 32
    assert torch.equal(dx, dx.round()) and torch.equal(dy, dy.round())  # whole pixels
    for d in (dx, dy):
        assert d.min() == -14 and d.max() == 14
        counts = torch.bincount((d + 14).long(), minlength=29)
        assert counts.min() > 0.5 * len(d) / 29 and counts.max() < 1.5 * len(d) / 29
    # every pixel is the original pixel shifted, the border replicated (pad + crop of a replicate-padded image)
    k = torch.arange(SIZE, dtype=torch.float32)
    assert torch.equal(out[:, 0], (k + dx[:, None, None]).clamp(0, SIZE - 1).expand(-1, SIZE, -1))
    assert torch.equal(out[:, 1], (k[:, None] + dy[:, None, None]).clamp(0, SIZE - 1).expand(-1, -1, SIZE))
    assert len({(a, b) for a, b in zip(dx[:64].tolist(), dy[:64].tolist(), strict=True)}) > 40  # per image


def test_rotation_angles_spread_uniformly_over_90_degrees_one_angle_per_call():
    torch.manual_seed(2)
    aug = Augmenter(names=("rotate",))
    out = torch.cat([aug(x) for x in coordinate_images(2000).split(2)])  # 1000 calls of 2 images
    angles = recovered_angles(out).view(1000, 2)
    assert (angles[:, 0] - angles[:, 1]).abs().max() < 1e-2  # the images of a call share the angle
    a = angles[:, 0]
    assert a.min() > -90.01 and a.max() < 90.01
    assert a.min() < -88 and a.max() > 88
    counts = torch.histc(a, bins=6, min=-90, max=90)  # uniform: ~167 per 30 degrees
    assert counts.min() > 120 and counts.max() < 215
    assert abs(a.abs().mean().item() - 45) < 3


def test_angles_shared_within_a_choice_and_call_shifts_per_image():
    """All images of a call that picked the same rotating choice share its angle; each choice draws its own (the
    release holds separate transform objects per choice); separate chunks (calls) draw separately."""
    torch.manual_seed(3)
    aug = Augmenter(names=("rotate", "shift-rotate", "rotate-shift"))
    params = AugParams.cat([aug.sample_params(300, SIZE) for _ in range(2)])
    out = aug.apply(coordinate_images(600), params)
    angles = recovered_angles(out)
    group_angles = []
    for chunk in range(2):
        for choice in ("rotate", "shift-rotate", "rotate-shift"):
            sel = (params.chunk == chunk) & (params.choice == AUGMENTATIONS.index(choice))
            assert sel.sum() > 50
            assert angles[sel].max() - angles[sel].min() < 2e-2
            group_angles.append(angles[sel].mean().item())
            if choice != "rotate":  # shifts differ per image within the group
                assert len(set(out[sel, 0, 31, 31].round(decimals=2).tolist())) > 20
    assert min(abs(a - b) for i, a in enumerate(group_angles) for b in group_angles[i + 1 :]) > 1e-3


def test_perspective_corner_sampler_follows_torchvision_get_params():
    torch.manual_seed(4)
    for width, height in ((124, 124), (101, 80)):
        # RandomPerspective.get_params: topleft = [randint(0, int(0.5 * half_w) + 1),
        # randint(0, int(0.5 * half_h) + 1)], topright x = randint(w - int(0.5 * half_w) - 1, w), ...
        dx, dy = int(0.5 * (width // 2)), int(0.5 * (height // 2))
        lo_hi = {  # per corner (topleft, topright, botright, botleft): x range, y range, both inclusive
            0: ((0, dx), (0, dy)),
            1: ((width - dx - 1, width - 1), (0, dy)),
            2: ((width - dx - 1, width - 1), (height - dy - 1, height - 1)),
            3: ((0, dx), (height - dy - 1, height - 1)),
        }
        ends = perspective_endpoints(20000, width, height, 0.5)
        assert ends.dtype == torch.long and ends.shape == (20000, 4, 2)
        for corner, ranges in lo_hi.items():
            for axis, (lo, hi) in enumerate(ranges):
                v = ends[:, corner, axis]
                assert v.min() == lo and v.max() == hi
                counts = torch.bincount(v - lo, minlength=hi - lo + 1)
                expected = len(v) / (hi - lo + 1)
                assert counts.min() > 0.7 * expected and counts.max() < 1.3 * expected
    # the augmenter draws them on the 64 + 2 * 30 px padded image: corners move inwards by 0..31 px
    table = AugParams.cat([Augmenter().sample_params(1, SIZE) for _ in range(8)]).endpoints.reshape(-1, 4, 2)
    start = torch.tensor([[0, 0], [123, 0], [123, 123], [0, 123]])
    assert (table - start).abs().max() == 31 and (table - start).abs().min() == 0


def test_each_choice_is_drawn_an_eighth_of_the_time():
    torch.manual_seed(5)
    counts = torch.bincount(Augmenter().sample_params(80000, SIZE).choice, minlength=8)
    assert (counts - 10000).abs().max() < 500  # binomial std ~94
    sub = torch.bincount(Augmenter(names=("shift", "rotate")).sample_params(8000, SIZE).choice, minlength=8)
    assert sub[1] + sub[2] == 8000 and abs(sub[1].item() - 4000) < 300


def test_frames_of_a_stacked_image_share_its_transform():
    torch.manual_seed(6)
    frame = torch.rand(32, 3, SIZE, SIZE) * 2 - 1
    out = Augmenter()(frame.repeat(1, 3, 1, 1))
    assert torch.equal(out[:, 0:3], out[:, 3:6]) and torch.equal(out[:, 3:6], out[:, 6:9])
    aug = Augmenter()
    x = torch.rand(32, 9, SIZE, SIZE) * 2 - 1
    params = aug.sample_params(32, SIZE)
    whole = aug.apply(x, params)
    for f in range(3):
        assert torch.allclose(whole[:, 3 * f : 3 * f + 3], aug.apply(x[:, 3 * f : 3 * f + 3], params), atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_shape_dtype_and_device_are_kept(dtype):
    x = (torch.rand(12, 9, SIZE, SIZE) * 2 - 1).to(dtype)
    out = Augmenter()(x)
    assert out.shape == x.shape and out.dtype == dtype and out.device == x.device


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match=r"unknown augmentation.*'flip'.*valid: \['identity', 'shift'"):
        Augmenter(names=("shift", "flip"))
    assert len(AUGMENTATIONS) == 8
    with pytest.raises(ValueError, match="square"):
        Augmenter()(torch.zeros(4, 3, SIZE, 32))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_no_host_device_sync_on_gpu():
    aug = Augmenter()
    x = torch.rand(96, 9, SIZE, SIZE, device="cuda") * 2 - 1
    aug(x)  # builds the per-device constant tables once
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = aug(x)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert out.shape == x.shape

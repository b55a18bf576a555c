"""The cases every adapter test runs through: tiny models built from configs (no network, fixed seeds),
the methods, a relative error, and a way to move adapters off their initial values."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import transformers
from torch import nn

from lorma_exp.adapters import AdapterConfig, iter_adapter_layers

transformers.logging.set_verbosity_error()

VOCAB = 64
HIDDEN = 16
LAYERS = 2
HEADS = 2
INTERMEDIATE = 40  # d_out > d_in for up/gate, d_out < d_in for down


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """‖actual − expected‖ / ‖expected‖ (Frobenius), in float64."""
    expected = expected.detach().double()
    return float((actual.detach().double() - expected).norm() / expected.norm())


def perturb_adapters(model: nn.Module, std: float = 0.2, seed: int = 1) -> None:
    """Move every adapter factor off its initial value, so that nothing is trivially the identity."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer in iter_adapter_layers(model):
            for parameter in layer.adapter_parameters():
                noise = torch.randn(parameter.shape, generator=generator, dtype=torch.float64) * std
                parameter.add_(noise.to(parameter.dtype))


class TinyMLP(nn.Module):
    """A plain torch model (no config, no family): two hidden layers and a head."""

    def __init__(self) -> None:
        super().__init__()
        self.lin0 = nn.Linear(10, 24)
        self.lin1 = nn.Linear(24, 12, bias=False)
        self.head = nn.Linear(12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.lin1(torch.relu(self.lin0(x)))))


def _bert() -> nn.Module:
    config = transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=INTERMEDIATE,
        num_labels=3,
    )
    return transformers.BertForSequenceClassification(config)


def _roberta() -> nn.Module:
    config = transformers.RobertaConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=INTERMEDIATE,
        pad_token_id=1,
    )
    return transformers.RobertaForSequenceClassification(config)


def _gpt2() -> nn.Module:
    config = transformers.GPT2Config(
        vocab_size=VOCAB, n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS, bos_token_id=0, eos_token_id=0
    )
    return transformers.GPT2LMHeadModel(config)


def _llama() -> nn.Module:
    config = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=1,
        intermediate_size=INTERMEDIATE,
    )
    return transformers.LlamaForCausalLM(config)


@dataclass(frozen=True)
class ModelSpec:
    """A tiny model, the targets a run on it would use, and how to feed it."""

    build_untrained: Callable[[], nn.Module]
    targets: tuple[str, ...]
    is_transformers: bool = True
    modules_to_save: tuple[str, ...] | None = None

    def build(self, seed: int = 0) -> nn.Module:
        """The same weights on every call with the same seed, in eval mode (dropout off)."""
        torch.manual_seed(seed)
        return self.build_untrained().eval()

    def inputs(self, seed: int = 2) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(seed)
        if not self.is_transformers:
            return {"x": torch.randn(4, 10, generator=generator)}
        return {"input_ids": torch.randint(2, VOCAB, (2, 7), generator=generator)}

    @staticmethod
    def logits(model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        out = model(**inputs)
        return out if isinstance(out, torch.Tensor) else out.logits


MODELS = {
    "bert": ModelSpec(_bert, ("q", "v")),
    "roberta": ModelSpec(_roberta, ("q", "v", "up", "down")),
    "gpt2": ModelSpec(_gpt2, ("q", "v", "o", "up")),
    "llama": ModelSpec(_llama, ("q", "v", "o", "up", "down", "gate")),
    "mlp": ModelSpec(TinyMLP, ("lin0", "lin1"), is_transformers=False, modules_to_save=("head",)),
}


def reference_pi(matrix: torch.Tensor) -> torch.Tensor:
    """π(M)[i, j] = M[i, (j − i) mod n], by an explicit index table (method.md §1)."""
    n = matrix.shape[0]
    columns = (torch.arange(n)[None, :] - torch.arange(n)[:, None]) % n
    return torch.gather(matrix, 1, columns)


#: `W'` from the frozen weight `W` (d_out × d_in), one slice's factors by name, `s` and the mode.
LiteralWeight = Callable[[torch.Tensor, dict[str, torch.Tensor], float, str | None], torch.Tensor]


def lora_weight(weight, factors, scale, mode):
    """LoRA: W + s·B·A."""
    return weight + scale * factors["lora_B"] @ factors["lora_A"]


def multiplied(inflate: Callable[[torch.Tensor, float], torch.Tensor]) -> LiteralWeight:
    """LoRMA: M·W (pre) or W·M (post), M = inflate(B·A, s)."""

    def literal(weight, factors, scale, mode):
        multiplier = inflate(factors["lorma_B"] @ factors["lorma_A"], scale)
        return multiplier @ weight if mode == "pre" else weight @ multiplier

    return literal


def rri(product, scale):
    return torch.eye(product.shape[0], dtype=product.dtype) + scale * product


def shift(product, scale):
    return scale * reference_pi(product)


def uninflated(product, scale):
    return scale * product


def row_magnitude(literal: LiteralWeight) -> LiteralWeight:
    """diag(g)·W', g = the factor `lorma_magnitude`."""
    return lambda weight, factors, scale, mode: (
        factors["lorma_magnitude"][:, None] * literal(weight, factors, scale, mode)
    )


LORMA_FACTORS = ("lorma_A", "lorma_B")


@dataclass(frozen=True)
class Method:
    """An adapter method as the generic tests see it: its config fields and what to expect of it, written
    down here independently of the library (the literal formula of method.md, the expected factors)."""

    fields: dict[str, str]
    literal_weight: LiteralWeight
    #: At init: `"base"` (the base function bitwise), `"rounding"` (up to rounding) or `"projector"`.
    at_init: str
    exact_lora_export: bool
    factor_names: tuple[str, ...] = LORMA_FACTORS
    invertible: bool = True


def lorma(inflation: str, literal_weight: LiteralWeight, **expected) -> dict[str, Method]:
    """One LoRMA inflation, in both modes."""
    return {
        f"lorma-{inflation}-{mode}": Method(
            {"method": "lorma", "inflation": inflation, "mode": mode}, literal_weight, **expected
        )
        for mode in ("pre", "post")
    }


#: Every adapter method the generic tests run: one entry per method or LoRMA inflation.
METHODS: dict[str, Method] = {
    **lorma("rri", multiplied(rri), at_init="base", exact_lora_export=True),
    **lorma("shift", multiplied(shift), at_init="rounding", exact_lora_export=False),
    **lorma("none", multiplied(uninflated), at_init="projector", exact_lora_export=False, invertible=False),
    **lorma(
        "rri_magnitude",
        row_magnitude(multiplied(rri)),
        at_init="base",
        exact_lora_export=False,
        factor_names=(*LORMA_FACTORS, "lorma_magnitude"),
    ),
    "lora": Method(
        {"method": "lora"},
        lora_weight,
        at_init="base",
        exact_lora_export=True,
        factor_names=("lora_A", "lora_B"),
    ),
}

#: A few cases also exercise the bias and dropout options.
EXTRA_OPTIONS = {
    ("bert", "lorma-rri-post"): {"bias": "adapter"},
    ("roberta", "lora"): {"bias": "all"},
    ("llama", "lorma-rri-pre"): {"dropout": 0.1},
    ("gpt2", "lorma-shift-pre"): {"dropout": 0.1, "dropout_on": "input"},
    ("gpt2", "lorma-rri_magnitude-post"): {"bias": "adapter", "dropout": 0.1},
}


@dataclass(frozen=True)
class Case:
    """One (model, adapter config) pair, run through every behaviour."""

    model_name: str
    method_name: str
    options: dict = field(default_factory=dict)

    @property
    def spec(self) -> ModelSpec:
        return MODELS[self.model_name]

    @property
    def method(self) -> Method:
        return METHODS[self.method_name]

    @property
    def id(self) -> str:
        return f"{self.model_name}-{self.method_name}"

    def config(self) -> AdapterConfig:
        return AdapterConfig(
            targets=self.spec.targets,
            modules_to_save=self.spec.modules_to_save,
            r=4,
            alpha=8,
            **self.method.fields,
            **self.options,
        )


CASES = [
    Case(model, method, EXTRA_OPTIONS.get((model, method), {})) for model in MODELS for method in METHODS
]

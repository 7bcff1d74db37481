"""Distilled drafts: a few layers at the target's width around the target's own
embeddings, final norm and LM head, so only those layers need shipping."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from specray.file_modes import save_safetensors
from specray.models.refs import DRAFT_METADATA

FORMAT = "specray-draft/1"
WEIGHTS_FILE = "draft.safetensors"
HEAD_IDS_KEY = "head_token_ids"
SHARED_WEIGHTS = ("model.embed_tokens.weight", "model.norm.weight", "lm_head.weight")
OWN_PREFIX = "model.layers."


class SubsetHead(torch.nn.Module):
    """LM head over the target's most frequent output tokens only.

    The full head is ~40% of a small draft's cost. Logits still come out over
    the full vocabulary (-inf outside the subset) so the engine needs no
    special case; verification uses the target's full distribution, so
    decoding stays lossless.
    """

    def __init__(self, full_weight: torch.Tensor, token_ids: torch.Tensor):
        super().__init__()
        self.out_features = int(full_weight.shape[0])
        self.register_buffer("token_ids", token_ids.to(torch.long).clone())
        self.weight = torch.nn.Parameter(full_weight.detach()[self.token_ids].clone(), requires_grad=False)

    def subset_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits over the subset only (training needs no -inf padding)."""
        return F.linear(hidden, self.weight)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        sub = self.subset_logits(hidden)
        full = sub.new_full((*sub.shape[:-1], self.out_features), float("-inf"))
        return full.index_copy(-1, self.token_ids, sub)


def output_support(model) -> torch.Tensor | None:
    """The token ids at which `model`'s logits can be finite, ascending (a subset head's), or None: every
    token. The engine reads a draft's distribution over these columns only: at batch 16 its sampling and
    statistics over the embedded target's 49k vocabulary took 8 ms a draft step, over an 8k subset 1.5 ms.
    On the CPU, where the engine reads the draft's logits whatever device the draft runs on."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return torch.sort(head.token_ids).values.cpu() if isinstance(head, SubsetHead) else None


def own_columns(head, hidden: torch.Tensor) -> torch.Tensor:
    """Logits over the columns `head` has: its subset (training needs no -inf padding), or the vocabulary."""
    return head.subset_logits(hidden) if isinstance(head, SubsetHead) else F.linear(hidden, head.weight)


def draft_config(target_config, num_layers: int):
    """The target's config cut to `num_layers` layers; sharing is wired by hand, not by tying."""
    config = copy.deepcopy(target_config)
    config.num_hidden_layers = num_layers
    if getattr(config, "layer_types", None):
        config.layer_types = list(config.layer_types)[:num_layers]
    config.tie_word_embeddings = False
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    return config


def build_draft(target, num_layers: int, head_token_ids: torch.Tensor | None = None, init_from_target: bool = True,
                dtype: torch.dtype | None = None):
    """A `num_layers` draft sharing the target's embeddings, final norm and head (same tensors, frozen).

    With `init_from_target` the layers start as copies of the target's first
    layers, which trains far faster than random init. A `dtype` other than the
    target's gives the draft its own copies of the shared modules in that dtype.
    """
    from transformers import AutoModelForCausalLM

    if num_layers < 1 or num_layers > target.config.num_hidden_layers:
        raise ValueError(f"num_layers must be in 1..{target.config.num_hidden_layers}, got {num_layers}")
    target_dtype = target.get_input_embeddings().weight.dtype
    dtype = dtype or target_dtype

    def shared(module):
        return module if dtype == target_dtype else copy.deepcopy(module).to(dtype)

    draft = AutoModelForCausalLM.from_config(draft_config(target.config, num_layers), dtype=dtype)
    draft.model.embed_tokens = shared(target.get_input_embeddings())
    draft.model.norm = shared(target.model.norm)
    head = target.get_output_embeddings()
    draft.lm_head = shared(head) if head_token_ids is None else SubsetHead(head.weight.to(dtype), head_token_ids)
    if init_from_target:
        for mine, theirs in zip(draft.model.layers, target.model.layers):
            mine.load_state_dict(theirs.state_dict())
    for name, param in draft.named_parameters():
        param.requires_grad_(name.startswith(OWN_PREFIX))
    return draft.to(target.device)


def head_token_ids(draft) -> torch.Tensor | None:
    """The draft's head subset, or None for a full head."""
    return getattr(draft.lm_head, "token_ids", None)


def own_weights(draft) -> dict[str, torch.Tensor]:
    """The tensors a draft owns (its layers and head subset): all that gets shipped."""
    weights = {k: v.detach().contiguous() for k, v in draft.state_dict().items() if k.startswith(OWN_PREFIX)}
    ids = head_token_ids(draft)
    if ids is not None:
        weights[HEAD_IDS_KEY] = ids.detach().cpu().contiguous()
    return weights


def target_fingerprint(target) -> dict:
    """What a draft's target must match for its layers to make sense."""
    c = target.config
    return {"model_type": c.model_type, "hidden_size": c.hidden_size, "vocab_size": c.vocab_size,
            "num_hidden_layers": c.num_hidden_layers}


def save_draft(draft, target, target_ref: str, out_dir: str | Path, metadata: dict | None = None,
               dtype: torch.dtype = torch.float32) -> Path:
    """Write the draft's own weights (safetensors) and its metadata (JSON) to `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = {k: (v.to(dtype) if v.is_floating_point() else v).cpu() for k, v in own_weights(draft).items()}
    save_safetensors(weights, out_dir / WEIGHTS_FILE)
    ids = head_token_ids(draft)
    meta = {
        "format": FORMAT,
        "target": {"ref": target_ref, **target_fingerprint(target)},
        "num_hidden_layers": draft.config.num_hidden_layers,
        "shared_with_target": list(SHARED_WEIGHTS),
        "head_subset": None if ids is None else {"size": int(ids.numel()), "tensor": HEAD_IDS_KEY},
        "weights": {"file": WEIGHTS_FILE, "dtype": str(dtype).removeprefix("torch.")},
        **(metadata or {}),
    }
    write_draft_metadata(out_dir, meta)
    return out_dir


def read_draft_metadata(draft_dir: str | Path) -> dict:
    return json.loads((Path(draft_dir) / DRAFT_METADATA).read_text())


def write_draft_metadata(draft_dir: str | Path, meta: dict) -> None:
    """Replace the metadata file atomically (results are added after training)."""
    path = Path(draft_dir) / DRAFT_METADATA
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    tmp.replace(path)


def draft_target_ref(draft_dir: str | Path) -> str:
    """The target ref a draft was distilled from."""
    return read_draft_metadata(draft_dir)["target"]["ref"]


def load_draft(draft_dir: str | Path, target, dtype: torch.dtype | None = None):
    """Rebuild a saved draft around `target`'s shared weights, in `dtype` (default: the target's)."""
    meta = read_draft_metadata(draft_dir)
    if meta.get("format") != FORMAT:
        raise ValueError(f"{draft_dir}: unknown draft format {meta.get('format')!r}")
    expected = {k: v for k, v in meta["target"].items() if k != "ref"}
    if expected != target_fingerprint(target):
        raise ValueError(
            f"{draft_dir} was distilled for {expected}, not for a target with {target_fingerprint(target)}"
        )
    weights = load_file(str(Path(draft_dir) / meta["weights"]["file"]))
    ids = weights.pop(HEAD_IDS_KEY, None)
    draft = build_draft(target, meta["num_hidden_layers"], ids, init_from_target=False, dtype=dtype)
    missing, unexpected = draft.load_state_dict(weights, strict=False)
    missing = [k for k in missing if k.startswith(OWN_PREFIX)]
    if missing or unexpected:
        raise ValueError(f"{draft_dir}: weights do not fit (missing {missing}, unexpected {unexpected})")
    return draft

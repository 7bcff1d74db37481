"""Feature-level drafts (EAGLE): one decoder layer that reads the target's own last hidden states.

A small-model draft must rebuild from tokens alone what the target already computed; a feature-level
draft starts from it. At position j it reads the embedding of token j and the target's final hidden
state at position j-1 (the state the target predicted token j from), predicts the target's state at j,
and decodes it with the target's LM head (or its frequent-token subset). Drafting further ahead, its
own predicted state stands in for the target's, which does not exist yet; after verification the
engine has the target's true states of the accepted tokens, and the draft re-reads them (EAGLE, Li et
al. 2024, arXiv 2401.15077). Verification uses the target's full distribution, so decoding stays
lossless whatever the draft predicts.

What the draft reads of the target is its `target_layers`: by default the final state only (EAGLE); with
lower layers beside it (EAGLE-3, Li et al. 2025, arXiv 2503.01840, fuses a low, a middle and the top
layer), the target's states at those layers are captured side by side ([.., L*H]) and a learned `fuse`
projection turns them into the one state the draft reads. Its own predicted states, read when drafting
ahead, are already one state wide and skip the fusion. The regression target stays the final state.

Only the layer, the projections and the head subset are shipped; the embeddings and LM head are
the target's. A feature-level draft is meaningless beside any other target, so its metadata records a
fingerprint of the target's weights and loading refuses a target that does not match.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import AutoModel
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.modeling_utils import slice_logits_to_keep

from specray.file_modes import save_safetensors
from specray.models.draft import SubsetHead, draft_config, read_draft_metadata, target_fingerprint, write_draft_metadata

FORMAT = "specray-feature-draft/1"
WEIGHTS_FILE = "draft.safetensors"
HEAD_IDS_KEY = "head_token_ids"
FINGERPRINT_RTOL = 1e-3  # weight statistics agree this closely across float32/bfloat16/float16 copies


class FeatureDraft(torch.nn.Module):
    """fc([embedding of token j ; state at j-1]) → one decoder layer + norm → predicted state at j → LM head.
    Called like a causal LM, with the states before each token as `target_hidden`: the target's, as the
    engine captures them at `target_layers` ([B, T, L*H]), or the draft's own predictions ([B, T, H])."""

    reads_target_hidden = True  # the engine feeds it the target's states (see `specray.engine.batch_state`)

    def __init__(self, target, head_token_ids: torch.Tensor | None = None, dtype: torch.dtype | None = None,
                 target_layers: tuple[int, ...] | None = None):
        super().__init__()
        self.target_layers = checked_layers(target_layers, target.config.num_hidden_layers)
        target_dtype = target.get_input_embeddings().weight.dtype
        dtype = dtype or target_dtype

        def shared(module):  # the target's own module, or a copy when the draft runs in another dtype
            return module if dtype == target_dtype else copy.deepcopy(module).to(dtype)

        self.config = draft_config(target.config, 1)
        hidden = self.config.hidden_size
        self.model = AutoModel.from_config(self.config, dtype=dtype)
        self.model.embed_tokens = shared(target.get_input_embeddings())
        self.fc = torch.nn.Linear(2 * hidden, hidden, dtype=dtype)
        wide = len(self.target_layers) * hidden
        self.fuse = torch.nn.Linear(wide, hidden, dtype=dtype) if wide > hidden else None
        head = target.get_output_embeddings()
        self.lm_head = shared(head) if head_token_ids is None else SubsetHead(head.weight.to(dtype), head_token_ids)
        self.generation_config = target.generation_config

    def get_output_embeddings(self):
        return self.lm_head

    def get_input_embeddings(self):
        return self.model.embed_tokens

    @property
    def state_size(self) -> int:
        """How wide the target's states it reads are: one hidden state per target layer it reads."""
        return len(self.target_layers) * self.config.hidden_size

    def own_parameters(self) -> dict[str, torch.nn.Parameter]:
        """What training updates and shipping writes: the projections, the layer and its norm."""
        own = ("fc.", "fuse.", "model.layers.", "model.norm.")
        return {k: p for k, p in self.named_parameters() if k.startswith(own)}

    def read_states(self, states: torch.Tensor) -> torch.Tensor:
        """[.., H] from the states before each token: the target's ([.., L*H]) fused into one, the draft's own
        ([.., H]) as they are."""
        return states if self.fuse is None or states.shape[-1] == self.config.hidden_size else self.fuse(states)

    def predict_hidden(self, input_ids, target_hidden=None, attention_mask=None, position_ids=None, cache=None,
                       use_cache: bool = False) -> torch.Tensor:
        """The predicted target state at every position [B, T, H] (zeros stand in for missing target states)."""
        embeds = self.model.embed_tokens(input_ids)
        dtype = self.fc.weight.dtype
        if target_hidden is None:
            target_hidden = torch.zeros(*input_ids.shape, self.config.hidden_size, dtype=dtype, device=input_ids.device)
        fused = self.fc(torch.cat([embeds.to(dtype), self.read_states(target_hidden.to(dtype))], dim=-1))
        out = self.model(inputs_embeds=fused, attention_mask=attention_mask, position_ids=position_ids, cache=cache,
                         use_cache=use_cache)
        return out.last_hidden_state

    def forward(self, input_ids, attention_mask=None, position_ids=None, cache=None, target_hidden=None,
                use_cache: bool = False, output_hidden_states: bool = False, logits_to_keep: int | torch.Tensor = 0):
        hidden = self.predict_hidden(input_ids, target_hidden, attention_mask, position_ids, cache, use_cache)
        kept = slice_logits_to_keep(hidden, logits_to_keep)  # the last n positions, or these positions
        logits = self.lm_head(kept.to(self.lm_head.weight.dtype))
        return CausalLMOutputWithPast(logits=logits, hidden_states=(hidden,) if output_hidden_states else None)


def reads_target_hidden(model) -> bool:
    """Whether `model` is a draft that must be fed the target's hidden states."""
    return getattr(model, "reads_target_hidden", False)


def checked_layers(layers, num_layers: int) -> tuple[int, ...]:
    """The target layers a draft reads, as transformers numbers hidden states (i: the output of decoder layer
    i, `num_layers`: the final state, after the norm), ascending and ending with the final state; default: it
    alone. Anything else is a ValueError naming the layers and the target's depth."""
    try:
        read = tuple(int(i) for i in (layers or (num_layers,)))
    except (TypeError, ValueError):
        read = ()
    if not read or read[-1] != num_layers or read[0] < 1 or list(read) != sorted(set(read)):
        raise ValueError(f"target layers {layers!r}: need ascending layers in 1..{num_layers} ending with "
                         f"{num_layers}, the target's final state (it has {num_layers} layers)")
    return read


def build_feature_draft(target, head_token_ids: torch.Tensor | None = None, seed: int = 0,
                        target_layers: tuple[int, ...] | None = None) -> FeatureDraft:
    """A fresh float32 feature-level draft for `target`: its layer and norm start as the target's last
    ones, the input projection adds the token's embedding to the target state, and the fusion of several
    target layers starts by passing the final state through (training learns what the others add)."""
    torch.manual_seed(seed)
    draft = FeatureDraft(target, head_token_ids, torch.float32, target_layers)
    draft.model.layers[0].load_state_dict(target.model.layers[-1].state_dict())
    draft.model.norm.load_state_dict(target.model.norm.state_dict())
    hidden = draft.config.hidden_size
    with torch.no_grad():
        draft.fc.weight.zero_()
        draft.fc.weight[:, hidden:] = torch.eye(hidden)
        draft.fc.weight[:, :hidden] = torch.eye(hidden)
        draft.fc.bias.zero_()
        if draft.fuse is not None:
            draft.fuse.weight.zero_()
            draft.fuse.weight[:, -hidden:] = torch.eye(hidden)
            draft.fuse.bias.zero_()
    draft.requires_grad_(False)
    for p in draft.own_parameters().values():
        p.requires_grad_(True)
    return draft


def weight_fingerprint(target) -> dict[str, list[float]]:
    """Mean |w| and std of the target's embeddings, head, final norm and first and last layers' first
    weight: the same whatever dtype the target was loaded in, different for any other model."""
    named = dict(target.named_parameters())
    layers = [k for k in named if k.startswith("model.layers.")]
    keys = ["model.embed_tokens.weight", "model.norm.weight", layers[0], layers[-1]]
    head = target.get_output_embeddings()
    stats = {k: named[k] for k in keys if k in named}
    if head is not None:
        stats["lm_head.weight"] = head.weight
    return {k: [round(float(w.detach().double().abs().mean()), 8), round(float(w.detach().double().std()), 8)]
            for k, w in stats.items()}


def target_identity(target) -> dict:
    """The target's shape (what a layer draft records too) and the fingerprint of its weights."""
    return {**target_fingerprint(target), "weights": weight_fingerprint(target)}


def same_weights(recorded: dict, actual: dict) -> bool:
    if recorded.keys() != actual.keys():
        return False
    return all(abs(a - b) <= FINGERPRINT_RTOL * max(abs(a), abs(b), 1e-12)
               for k in recorded for a, b in zip(recorded[k], actual[k]))


def save_feature_draft(draft: FeatureDraft, target, target_ref: str, out_dir: str | Path, metadata: dict | None = None,
                       dtype: torch.dtype = torch.float32) -> Path:
    """The draft's own weights (safetensors) and metadata with the target's identity (JSON) in `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = {k: p.detach().to(dtype).contiguous().cpu() for k, p in draft.own_parameters().items()}
    ids = getattr(draft.lm_head, "token_ids", None)
    if ids is not None:
        weights[HEAD_IDS_KEY] = ids.detach().cpu().contiguous()
    save_safetensors(weights, out_dir / WEIGHTS_FILE)
    meta = {
        "format": FORMAT,
        "target": {"ref": target_ref, **target_identity(target)},
        "hidden_size": draft.config.hidden_size,
        "target_layers": list(draft.target_layers),
        "head_subset": None if ids is None else {"size": int(ids.numel()), "tensor": HEAD_IDS_KEY},
        "weights": {"file": WEIGHTS_FILE, "dtype": str(dtype).removeprefix("torch.")},
        **(metadata or {}),
    }
    write_draft_metadata(out_dir, meta)
    return out_dir


def check_fits(draft_dir: str | Path, meta: dict, weights: dict[str, torch.Tensor], target) -> None:
    """Refuse a target the draft was not trained for, naming both shapes or both identities."""
    hidden, vocab = target.config.hidden_size, target.get_output_embeddings().weight.shape
    fc = weights.get("fc.weight")
    if fc is None or tuple(fc.shape) != (hidden, 2 * hidden):
        raise ValueError(f"{draft_dir}: the draft's input projection has shape {None if fc is None else tuple(fc.shape)}; "
                         f"a target with hidden size {hidden} needs ({hidden}, {2 * hidden})")
    ids = weights.get(HEAD_IDS_KEY)
    if ids is not None and ids.numel() and int(ids.max()) >= vocab[0]:
        raise ValueError(f"{draft_dir}: the draft's head subset reaches token {int(ids.max())}; the target's LM head "
                         f"has shape {tuple(vocab)}")
    recorded = meta["target"]
    actual = {"ref": recorded.get("ref"), **target_identity(target)}
    shape = target_fingerprint(target)
    if not same_weights(recorded.get("weights", {}), actual["weights"]) or any(recorded.get(k) != v for k, v in shape.items()):
        raise ValueError(f"{draft_dir} was trained on the target {_identity_line(recorded)}; it cannot draft for "
                         f"the target {_identity_line(actual)}")
    try:
        reads = len(checked_layers(meta.get("target_layers"), target.config.num_hidden_layers))
    except ValueError as exc:
        raise ValueError(f"{draft_dir}: {exc}") from None
    fuse = weights.get("fuse.weight")
    found, needed = None if fuse is None else tuple(fuse.shape), (hidden, reads * hidden) if reads > 1 else None
    if found != needed:
        raise ValueError(f"{draft_dir}: the draft's fusion weight has shape {found}; reading target layers "
                         f"{meta.get('target_layers')} at hidden size {hidden} needs {needed}")


def _identity_line(identity: dict) -> str:
    shape = {k: v for k, v in identity.items() if k not in ("ref", "weights")}
    return f"{identity.get('ref')!r} {shape} with weight fingerprint {identity.get('weights')}"


def load_feature_draft(draft_dir: str | Path, target, dtype: torch.dtype | None = None) -> FeatureDraft:
    """Rebuild a saved feature-level draft around `target`, in `dtype` (default: the target's)."""
    meta = read_draft_metadata(draft_dir)
    weights = load_file(str(Path(draft_dir) / meta["weights"]["file"]))
    check_fits(draft_dir, meta, weights, target)
    ids = weights.pop(HEAD_IDS_KEY, None)
    draft = FeatureDraft(target, ids, dtype, meta.get("target_layers"))
    missing, unexpected = draft.load_state_dict(weights, strict=False)
    missing = [k for k in missing if k in draft.own_parameters()]
    if missing or unexpected:
        raise ValueError(f"{draft_dir}: weights do not fit (missing {missing}, unexpected {unexpected})")
    draft.requires_grad_(False)
    return draft

"""Each stop policy's rule, the safe weight loaders, the registry, and lossless decoding with learned policies."""

import json

import numpy as np
import pytest
import torch

from conftest import random_prompts, reference_greedy
from specray.engine.speculative import GenerationConfig, SpeculativeEngine
from specray.policies.artifacts import ArtifactError, save_artifact
from specray.policies.base import Decision, DraftStep, Outcome
from specray.policies.confidence import refit_threshold
from specray.policies.disco import FEATURES, DiscoClassifier
from specray.policies.factory import make_policy
from specray.policies.registry import artifact_stem, latest_version, publish
from specray.policies.specdecpp import AcceptanceHead
from specray.schema import TOPK


def step(n=3, depth=1, token_prob=None, hidden_size=32, topk=None):
    token_prob = torch.full((n,), 0.5) if token_prob is None else torch.tensor(token_prob)
    topk = torch.zeros(n, TOPK) if topk is None else topk
    return DraftStep(
        seqs=torch.arange(n), depth=depth, position=torch.zeros(n, dtype=torch.long), token=torch.zeros(n, dtype=torch.long),
        token_prob=token_prob, entropy=torch.zeros(n), topk_probs=topk, hidden=torch.zeros(n, hidden_size),
    )


def test_static_budget_is_k():
    policy = make_policy("static:3")
    policy.reset(2)
    assert policy.budget(torch.arange(2)).tolist() == [3, 3]
    assert not policy.cost_aware


def test_heuristic_schedule_is_plus_two_minus_one_per_sequence():
    policy = make_policy("heuristic:k_start=4,k_max=7")
    policy.reset(3)
    rows = torch.arange(3)
    policy.observe(Outcome(rows, drafted=torch.tensor([4, 4, 0]), accepted=torch.tensor([4, 1, 0])))
    assert policy.budget(rows).tolist() == [6, 3, 4]  # all accepted: +2; a rejection: -1; no draft: unchanged
    policy.observe(Outcome(rows, drafted=torch.tensor([6, 3, 4]), accepted=torch.tensor([6, 0, 0])))
    assert policy.budget(rows).tolist() == [7, 2, 3]  # capped at k_max
    for _ in range(8):
        policy.observe(Outcome(rows, drafted=torch.tensor([1, 1, 1]), accepted=torch.tensor([0, 0, 0])))
    assert policy.budget(rows).tolist() == [1, 1, 1]  # never below 1


def test_confidence_stops_below_threshold():
    policy = make_policy("confidence:0.4")
    policy.reset(3)
    s = step(token_prob=[0.9, 0.4, 0.39])
    assert policy.decide(s, policy.accept_prob(s)).tolist() == [Decision.CONTINUE, Decision.CONTINUE, Decision.STOP]


def test_refit_minimises_fpr_plus_three_fnr():
    probs = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.8, 0.9])
    accepted = np.array([False, False, True, False, True, True, True])
    # at 0.3: FPR = 1/3 (0.6 kept though rejected), FNR = 0; at 0.7: FPR = 0, FNR = 1/4 -> 0.75
    assert refit_threshold(probs, accepted) == pytest.approx(0.3)
    assert refit_threshold(probs, np.ones(7, dtype=bool)) is None


def test_confidence_refit_moves_the_threshold_online():
    policy = make_policy("confidence:0.9,refit=true")
    policy.refit_every = 8
    policy.reset(2)
    for _ in range(4):
        s = step(n=2, token_prob=[0.8, 0.2])
        policy.decide(s, policy.accept_prob(s))
        policy.observe(Outcome(torch.arange(2), drafted=torch.tensor([1, 1]), accepted=torch.tensor([1, 0])))
    assert policy.threshold == pytest.approx(0.8)


def disco_weights(bias_sign: float, hidden: int = 4):
    """A classifier whose output depends only on the top-1 probability: P(accept) = sigmoid(sign * 20 * (top1 - 0.5))."""
    model = DiscoClassifier(hidden=hidden)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.fc1.weight[0, 0] = 1.0
        model.fc2.weight[0, 0] = bias_sign * 20.0
        model.fc2.bias[0] = -bias_sign * 10.0
    tensors = {k: v for k, v in model.state_dict().items()}
    return tensors, {"kind": "disco", "features": FEATURES, "tau": 0.5, "k_max": 6}


def specdecpp_weights(hidden_size: int, logit: float, depth: int = 2):
    head = AcceptanceHead(hidden_size, depth)
    with torch.no_grad():
        for p in head.parameters():
            p.zero_()
        head.out.bias[0] = logit
    return dict(head.state_dict()), {"kind": "specdecpp", "depth": depth, "h": 0.7, "k_max": 8}


def test_disco_loads_hand_made_weights_and_stops_below_tau(tmp_path):
    save_artifact(tmp_path / "code", *disco_weights(1.0))
    policy = make_policy(f"disco:path={tmp_path / 'code'}")
    policy.reset(2)
    topk = torch.zeros(2, TOPK)
    topk[:, 0] = torch.tensor([0.9, 0.2])
    s = step(n=2, topk=topk)
    prob = policy.accept_prob(s)
    assert prob[0] > 0.99 and prob[1] < 0.01
    assert policy.decide(s, prob).tolist() == [Decision.CONTINUE, Decision.STOP]
    assert policy.k_max == 6 and policy.tau == 0.5  # from the artifact's metadata


def test_specdecpp_stops_when_chance_of_a_rejection_reaches_h(tmp_path):
    logit = float(np.log(0.8 / 0.2))  # P(accept) = 0.8 for every token
    save_artifact(tmp_path / "global", *specdecpp_weights(32, logit))
    policy = make_policy(f"specdecpp:path={tmp_path / 'global'},h=0.5")
    policy.reset(1)
    decisions = []
    for depth in range(1, 6):
        s = step(n=1, depth=depth)
        decisions.append(int(policy.decide(s, policy.accept_prob(s))[0]))
    # 1 - 0.8^d: 0.2, 0.36, 0.488, 0.59 -> stop at depth 4
    assert decisions[:4] == [Decision.CONTINUE] * 3 + [Decision.STOP]


def test_specdecpp_rejects_a_head_for_another_hidden_size(tmp_path):
    save_artifact(tmp_path / "global", *specdecpp_weights(16, 0.0))
    policy = make_policy(f"specdecpp:path={tmp_path / 'global'}")
    policy.reset(1)
    with pytest.raises(ValueError, match="hidden size 16, the draft has 32"):
        policy.accept_prob(step(n=1))


@pytest.mark.parametrize("damage", ["missing_json", "missing_weights", "bad_json", "wrong_kind", "corrupt", "wrong_shape", "features"])
def test_malformed_weights_are_clear_errors_naming_the_file(tmp_path, damage):
    stem = tmp_path / "code"
    tensors, meta = disco_weights(1.0)
    if damage == "wrong_shape":
        tensors["fc1.weight"] = torch.zeros(4, 3)
    if damage == "features":
        meta["features"] = FEATURES[:-1]
    save_artifact(stem, tensors, meta)
    json_path, weights_path = tmp_path / "code.json", tmp_path / "code.safetensors"
    if damage == "missing_json":
        json_path.unlink()
    if damage == "missing_weights":
        weights_path.unlink()
    if damage == "bad_json":
        json_path.write_text("{not json")
    if damage == "wrong_kind":
        json_path.write_text(json.dumps({**meta, "kind": "specdecpp"}))
    if damage == "corrupt":
        weights_path.write_bytes(weights_path.read_bytes()[:40])
    with pytest.raises(ArtifactError, match="code"):
        make_policy(f"disco:path={stem}")


def test_learned_policy_without_weights_says_how_to_get_them():
    with pytest.raises(ValueError, match="needs weights"):
        make_policy("disco")


def test_registry_versions_latest_and_global_fallback(tmp_path):
    v1 = publish(tmp_path, "disco", {"global": disco_weights(1.0)})
    v2 = publish(tmp_path, "disco", {"code": disco_weights(-1.0), "global": disco_weights(1.0)})
    assert (v1, v2, latest_version(tmp_path, "disco")) == ("v0001", "v0002", "v0002")
    assert artifact_stem(tmp_path, "disco", "code") == (tmp_path / "disco" / "v0002" / "code", "v0002")
    assert artifact_stem(tmp_path, "disco", "math") == (tmp_path / "disco" / "v0002" / "global", "v0002")
    assert artifact_stem(tmp_path, "disco", "code", version="v0001")[0] == tmp_path / "disco" / "v0001" / "global"
    policy = make_policy("disco", domain="math", registry=str(tmp_path))
    assert policy.version == "v0002"
    assert not list((tmp_path / "disco").glob(".staging-*"))


@pytest.mark.parametrize("latest, domain", [("../../../outside", "code"), ("v0001/../../x", "code"), ("v0001", "../code"),
                                            ("v0001", "code/../../x"), ("v0001", "")])
def test_registry_paths_stay_inside_the_registry(tmp_path, latest, domain):
    publish(tmp_path / "registry", "disco", {"global": disco_weights(1.0)})
    (tmp_path / "registry" / "disco" / "LATEST").write_text(latest)
    with pytest.raises(ArtifactError, match="not a valid name"):
        artifact_stem(tmp_path / "registry", "disco", domain)
    with pytest.raises(ArtifactError, match="not a valid name"):
        publish(tmp_path / "registry", "disco", {"../evil": disco_weights(1.0)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["registry"]


def test_registry_without_the_policy_is_a_clear_error(tmp_path):
    with pytest.raises(ArtifactError, match="LATEST"):
        make_policy("specdecpp", registry=str(tmp_path))


@pytest.mark.parametrize("which", ["disco", "specdecpp"])
def test_learned_policies_are_lossless(target, draft, tokenizer, tmp_path, which):
    weights = disco_weights(1.0) if which == "disco" else specdecpp_weights(32, 1.0)
    save_artifact(tmp_path / "w", *weights)
    prompts = random_prompts(6, seed=9)
    engine = SpeculativeEngine(target, draft, tokenizer)
    out = engine.generate(prompts, make_policy(f"{which}:path={tmp_path / 'w'},cost=off"), GenerationConfig(max_new_tokens=20))
    assert [s.tokens for s in out.sequences] == [reference_greedy(target, p, 20) for p in prompts]
    assert sum(s.drafted for s in out.sequences) > 0


def test_rows_not_yet_verified_start_from_what_the_policy_has_seen():
    """A domain's policy learns its domain: new rows, in this batch or the next, start from its running
    acceptance instead of the fixed prior."""
    policy = make_policy("static:4")
    policy.reset(4)
    assert policy.acceptance.tolist() == pytest.approx([policy.prior_acceptance] * 4)
    for _ in range(40):  # rows 0 and 1 draft 4 tokens a round and see none accepted
        policy.observe(Outcome(torch.tensor([0, 1]), torch.tensor([4, 4]), torch.tensor([0, 0])))
    assert policy.acceptance[:2].max() < 0.05
    assert torch.allclose(policy.acceptance[2:], torch.tensor(policy.typical["model"])) and policy.typical["model"] < 0.05
    assert policy.ngram_acceptance.tolist() == pytest.approx([policy.prior_ngram_acceptance] * 4), "n-gram acceptance is kept apart"
    policy.reset(3)
    assert policy.acceptance.max() < 0.05, "the next batch starts where this one left off"


def test_rows_start_from_what_the_draft_was_measured_to_accept_in_their_domain(target, tokenizer):
    """A distilled draft carries its held-out agreement per domain; a policy that has verified nothing yet
    starts its rows there (a domain the draft was not measured on: the overall figure), not at the generic
    prior, and once it has verified tokens of its own the record no longer moves it."""
    from conftest import perturbed

    draft = perturbed(target, noise=0.05)
    draft.measured_acceptance = {"code": 0.3, "all": 0.45}
    engine = SpeculativeEngine(target, draft, tokenizer)
    code, chat, lookup = make_policy("heuristic"), make_policy("heuristic"), make_policy("heuristic,draft=ngram")
    engine.open([[5, 6, 7], [8, 9, 10]], [code, chat], GenerationConfig(max_new_tokens=4), domain=["code", "chat"])
    assert code.acceptance[0].item() == pytest.approx(0.3) and chat.acceptance[1].item() == pytest.approx(0.45)
    engine.open([[5, 6, 7]], lookup, GenerationConfig(max_new_tokens=4), domain="code")
    assert lookup.typical["model"] == lookup.prior_acceptance, "a policy that never runs the draft model keeps its prior"
    code.observe(Outcome(torch.tensor([0]), torch.tensor([2]), torch.tensor([2])))
    learned = code.typical["model"]
    code.expect(0.1)
    assert code.typical["model"] == learned != 0.1
    assert SpeculativeEngine(target, perturbed(target, noise=0.05), tokenizer).expected_acceptance("code") is None


def test_a_resolved_policy_pins_its_artifact_and_a_changed_file_is_refused(tmp_path):
    """The driver resolves once (knobs, version, checksum); a worker reading different bytes refuses to build."""
    from specray.policies.factory import build_policy, resolve_spec

    save_artifact(tmp_path / "code", *disco_weights(1.0))
    resolved = resolve_spec(f"disco:path={tmp_path / 'code'},k_max=4")
    assert resolved.kind == "disco" and dict(resolved.knobs)["tau"] == 0.5 and dict(resolved.knobs)["k_max"] == 4
    assert resolved.artifact.stem == str(tmp_path / "code") and len(resolved.artifact.sha256) == 64
    assert build_policy(resolved).k_max == 4
    save_artifact(tmp_path / "code", *disco_weights(-1.0))  # a new file under the same name
    with pytest.raises(ArtifactError, match="changed after the run resolved it"):
        build_policy(resolved)

"""CWT and softmax objectives against the published formula, and the model builder."""

import math
from collections.abc import Callable

import pytest
import torch
from transformers import GPTNeoXForCausalLM

from bench.errors import UserError
from bench.lm.config import ModelConfig
from bench.lm.model import PRESETS, build_model, count_parameters, untie_head
from bench.lm.objectives import causal_lm_loss, next_token_nll
from bench.text.config import CWTConfig
from bench.text.cwt import cwt_loss, softmax_loss

MICRO = ModelConfig(preset="micro")


def formula_loss(
    hidden: list[list[float]], targets: list[int], table: list[list[float]], tau: float = 1.0
) -> float:
    """cwt.md verbatim: -(1/K) sum_i log(exp(o_i.e(x_i)/tau) / sum_j exp(o_i.e(x_j)/tau))."""
    k = len(targets)
    total = 0.0
    for i in range(k):

        def score(j: int, i: int = i) -> float:
            return sum(a * b for a, b in zip(hidden[i], table[targets[j]], strict=True)) / tau

        denominator = sum(math.exp(score(j)) for j in range(k))
        total += math.log(math.exp(score(i)) / denominator)
    return -total / k


def formula_grads(
    hidden: torch.Tensor, targets: torch.Tensor, table: torch.Tensor, tau: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Central finite differences of formula_loss, entry by entry, in float64."""
    h, t, e = hidden.tolist(), targets.tolist(), table.tolist()
    step = 1e-6

    def diff(matrix: list[list[float]], r: int, c: int, loss: Callable[[], float]) -> float:
        keep = matrix[r][c]
        matrix[r][c] = keep + step
        up = loss()
        matrix[r][c] = keep - step
        down = loss()
        matrix[r][c] = keep
        return (up - down) / (2 * step)

    def loss() -> float:
        return formula_loss(h, t, e, tau)

    grad_h = [[diff(h, r, c, loss) for c in range(len(h[0]))] for r in range(len(h))]
    grad_e = [[diff(e, r, c, loss) for c in range(len(e[0]))] for r in range(len(e))]
    return torch.tensor(grad_h, dtype=torch.float64), torch.tensor(grad_e, dtype=torch.float64)


def random_case(k: int = 7, d: int = 5, v: int = 6, seed: int = 0, dtype=torch.float64):
    """Hidden states, targets with repeats (k > v forces some), and an embedding table."""
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(k, d, generator=gen, dtype=dtype)
    targets = torch.randint(0, v, (k,), generator=gen)
    table = torch.randn(v, d, generator=gen, dtype=dtype)
    return hidden, targets, table


def loss_and_grads(hidden, targets, table, **kwargs):
    hidden = hidden.clone().requires_grad_(True)
    table = table.clone().requires_grad_(True)
    loss = cwt_loss(hidden, targets, table, **kwargs)
    loss.backward()
    return loss.detach(), hidden.grad, table.grad


def test_cwt_matches_formula_value_and_gradients_with_repeats():
    hidden, targets, table = random_case()
    assert len(set(targets.tolist())) < len(targets)  # repeated targets are exercised
    loss, grad_h, grad_e = loss_and_grads(hidden, targets, table)
    assert loss.item() == pytest.approx(
        formula_loss(hidden.tolist(), targets.tolist(), table.tolist()), rel=1e-12
    )
    want_h, want_e = formula_grads(hidden, targets, table)
    torch.testing.assert_close(grad_h, want_h, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(grad_e, want_e, rtol=1e-6, atol=1e-8)
    # rows of tokens that are never a target get no gradient: the vocabulary is never touched
    unused = sorted(set(range(len(table))) - set(targets.tolist()))
    assert unused and grad_e[unused].abs().max() == 0


def test_repeated_target_keeps_its_duplicate_column():
    hidden, _, table = random_case(k=4)
    targets = torch.tensor([1, 3, 1, 2])
    kept = cwt_loss(hidden, targets, table).item()
    deduped = cwt_loss(hidden, targets, table, unique_negatives=True).item()
    assert kept == pytest.approx(formula_loss(hidden.tolist(), targets.tolist(), table.tolist()))
    assert abs(kept - deduped) > 1e-3


def test_unique_negatives_scores_each_row_against_its_own_token():
    hidden, _, table = random_case(k=5)
    targets = torch.tensor([4, 0, 4, 4, 2])
    columns = [0, 2, 4]  # the distinct targets, one column each
    want = 0.0
    for i, token in enumerate(targets.tolist()):
        scores = [float(hidden[i] @ table[c]) for c in columns]
        want -= scores[columns.index(token)] - math.log(sum(math.exp(s) for s in scores))
    got = cwt_loss(hidden, targets, table, unique_negatives=True)
    assert got.item() == pytest.approx(want / len(targets), rel=1e-12)
    # with no repeats the ablation is the same objective
    distinct = torch.tensor([4, 0, 3, 1, 2])
    torch.testing.assert_close(
        cwt_loss(hidden, distinct, table, unique_negatives=True), cwt_loss(hidden, distinct, table)
    )


def test_stable_where_naive_formula_overflows_float32():
    hidden, targets, table = random_case(k=6, d=4, v=10, seed=3, dtype=torch.float32)
    hidden = hidden * 40  # scores reach several hundred: exp overflows float32, not float64
    scores = hidden @ table[targets].T
    assert torch.isinf(torch.exp(scores)).any()
    assert scores.abs().max() < 700
    loss32 = cwt_loss(hidden, targets, table)
    assert torch.isfinite(loss32)
    exact = formula_loss(hidden.double().tolist(), targets.tolist(), table.double().tolist())
    assert loss32.item() == pytest.approx(exact, rel=1e-5)
    loss32_chunked = cwt_loss(hidden, targets, table, chunk_size=4)
    assert loss32_chunked.item() == pytest.approx(exact, rel=1e-5)


@pytest.mark.parametrize("chunk_size", [1, 3, 5, 8, 13])
@pytest.mark.parametrize("unique_negatives", [False, True])
def test_chunked_equals_unchunked(chunk_size, unique_negatives):
    hidden, targets, table = random_case(k=13, d=6, v=9, seed=chunk_size)
    full = loss_and_grads(
        hidden, targets, table, unique_negatives=unique_negatives, temperature=0.7
    )
    chunked = loss_and_grads(
        hidden,
        targets,
        table,
        unique_negatives=unique_negatives,
        temperature=0.7,
        chunk_size=chunk_size,
    )
    for got, want in zip(chunked, full, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)


def test_chunked_replays_autocast_in_backward():
    """Under bf16 autocast the recomputed scores must match the forward's, as unchunked ones do."""
    hidden, targets, table = random_case(k=40, d=16, v=12, seed=5, dtype=torch.float32)
    hidden = hidden * 3  # scores of a few units, where bf16 rounding of them is visible
    results = []
    for chunk_size in (None, 7):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, grad_h, grad_e = loss_and_grads(hidden, targets, table, chunk_size=chunk_size)
        assert grad_h.dtype == grad_e.dtype == torch.float32
        results.append((loss, grad_h, grad_e))
    for got, want in zip(*results, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-2, atol=5e-3)


def test_chunked_keeps_only_a_chunk_of_scores():
    """Memory: nothing K x K is saved for backward, and no op allocates more than chunk x K."""
    k, d, chunk = 2048, 16, 128
    hidden = torch.randn(k, d, requires_grad=True)
    table = torch.randn(k, d, requires_grad=True)
    targets = torch.arange(k)
    score_matrix = k * k * 4

    def measure(chunk_size: int | None) -> tuple[int, int]:
        saved: list[int] = []

        def pack(t: torch.Tensor) -> torch.Tensor:
            saved.append(t.numel() * t.element_size())
            return t

        with (
            torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t),
            torch.profiler.profile(
                activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True
            ) as prof,
        ):
            cwt_loss(hidden, targets, table, chunk_size=chunk_size).backward()
        largest = max(e.cpu_memory_usage for e in prof.events() if e.name.startswith("aten::"))
        return sum(saved), largest

    saved_full, largest_full = measure(None)
    saved_chunked, largest_chunked = measure(chunk)
    assert saved_full >= score_matrix and largest_full >= score_matrix
    assert saved_chunked < 4 * k * (d + 2) * 4  # inputs, labels, log-sum-exp: O(K D), not K^2
    assert largest_chunked <= chunk * k * 4


def test_temperature_divides_scores():
    hidden, targets, table = random_case()
    for tau in (0.1, 2.5):
        got = cwt_loss(hidden, targets, table, temperature=tau).item()
        assert got == pytest.approx(
            formula_loss(hidden.tolist(), targets.tolist(), table.tolist(), tau)
        )
        assert got == pytest.approx(cwt_loss(hidden / tau, targets, table).item())
    # a low temperature sharpens: each row's loss falls towards 0 when its positive wins
    targets = torch.arange(5)
    aligned = torch.eye(5, dtype=torch.float64)
    assert cwt_loss(aligned, targets, aligned, temperature=0.05) < 1e-6
    assert cwt_loss(aligned, targets, aligned) > 0.5


def test_softmax_loss_is_mean_negative_log_probability():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(6, 11, generator=gen)
    targets = torch.randint(0, 11, (6,), generator=gen)
    want = (
        -sum(
            math.log(math.exp(logits[i, t]) / sum(math.exp(x) for x in logits[i].tolist()))
            for i, t in enumerate(targets.tolist())
        )
        / 6
    )
    assert softmax_loss(logits, targets).item() == pytest.approx(want, rel=1e-6)


def micro_model(tied: bool, vocab: int = 50, seed: int = 0) -> GPTNeoXForCausalLM:
    torch.manual_seed(seed)
    return build_model(MICRO, vocab, tied)


def test_causal_softmax_equals_transformers_loss():
    model = micro_model(tied=False)
    ids = torch.randint(0, 50, (3, 17), generator=torch.Generator().manual_seed(2))
    ours = causal_lm_loss(model, ids, "softmax", CWTConfig())
    theirs = model(ids, labels=ids).loss
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(next_token_nll(model, ids), theirs.detach())


def test_causal_cwt_uses_final_hidden_states_and_input_embeddings():
    model = micro_model(tied=False)
    ids = torch.randint(0, 50, (2, 9), generator=torch.Generator().manual_seed(4))
    hidden = model.gpt_neox(ids).last_hidden_state
    want = cwt_loss(
        hidden[:, :-1].reshape(-1, 32), ids[:, 1:].reshape(-1), model.gpt_neox.embed_in.weight
    )
    got = causal_lm_loss(model, ids, "cwt", CWTConfig(chunk_size=None))
    torch.testing.assert_close(got, want)
    got.backward()
    assert model.lm_head.weight.grad is None  # the head is never evaluated


def test_cwt_embedding_gets_gradient_as_target():
    model = micro_model(tied=True)
    ids = torch.tensor([[1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12]])
    causal_lm_loss(model, ids, "cwt", CWTConfig(chunk_size=3)).backward()
    grad = model.gpt_neox.embed_in.weight.grad
    target_only = [6, 12]  # last tokens of each row: never an input, only a target
    assert (grad[target_only].abs().sum(dim=1) > 0).all()
    absent = [0, *range(13, 50)]
    assert grad[absent].abs().max() == 0


def test_unknown_objective_is_a_user_error():
    with pytest.raises(UserError, match="objective"):
        causal_lm_loss(
            micro_model(tied=True), torch.zeros(1, 4, dtype=torch.long), "mse", CWTConfig()
        )


def test_tied_model_shares_embedding_and_has_no_head_parameters():
    tied, untied = micro_model(tied=True), micro_model(tied=False)
    assert tied.lm_head.weight is tied.gpt_neox.embed_in.weight
    counts_tied, counts_untied = count_parameters(tied), count_parameters(untied)
    assert counts_tied["head"] == 0
    assert counts_untied["head"] == counts_untied["embedding"] == 50 * 32
    assert counts_tied["non_embedding"] == counts_untied["non_embedding"]
    assert counts_untied["total"] == counts_tied["total"] + 50 * 32
    assert counts_tied["total"] == sum(p.numel() for p in tied.parameters())
    ids = torch.randint(0, 50, (2, 8))
    hidden = tied.gpt_neox(ids).last_hidden_state
    torch.testing.assert_close(tied(ids).logits, hidden @ tied.gpt_neox.embed_in.weight.T)


def test_presets_and_overrides():
    assert PRESETS["pythia-70m"]["num_hidden_layers"] == 6
    model = build_model(
        ModelConfig(preset="tiny", num_layers=1, context=32),
        100,
        tied=True,
        bos_token_id=1,
        eos_token_id=1,
    )
    config = model.config
    assert (config.num_hidden_layers, config.hidden_size, config.max_position_embeddings) == (
        1,
        128,
        32,
    )
    assert config.rope_parameters["partial_rotary_factor"] == 0.25
    assert config.use_parallel_residual and config.hidden_dropout == 0
    assert config.eos_token_id == 1
    with pytest.raises(UserError, match="num_heads"):
        build_model(ModelConfig(preset="micro", num_heads=3), 100, tied=True)


def test_pythia_70m_shape_matches_published_count():
    """Pythia-70m: 70,426,624 parameters with its 50,304-row embedding and untied head."""
    with torch.device("meta"):
        model = build_model(ModelConfig(preset="pythia-70m"), 50304, tied=False)
    assert count_parameters(model)["total"] == 70_426_624


def test_untie_head_copies_embedding_and_round_trips(tmp_path):
    model = micro_model(tied=True)
    untie_head(model)
    embedding = model.gpt_neox.embed_in.weight
    assert model.lm_head.weight is not embedding
    torch.testing.assert_close(model.lm_head.weight, embedding)
    assert count_parameters(model)["head"] == embedding.numel()
    with torch.no_grad():
        model.lm_head.weight.mul_(1.5)  # the head now moves on its own
    assert not torch.equal(model.lm_head.weight, embedding)
    ids = torch.randint(0, 50, (2, 8))
    model.eval()
    with torch.no_grad():
        before = model(ids).logits
    model.save_pretrained(tmp_path)
    reloaded = GPTNeoXForCausalLM.from_pretrained(tmp_path)
    assert not reloaded.config.tie_word_embeddings
    assert reloaded.lm_head.weight is not reloaded.gpt_neox.embed_in.weight
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, before)

"""seqbench translate: the synthetic pair, the four models on the kernels against their references (the 2x
rule), greedy decoding against teacher forcing, BLEU through sacrebleu, bad input and resume."""
import csv
import json
import os
import random

import pytest
import torch

from bench.cli import main as cli
from bench.train import train as tr
from bench.translate import data as D
from bench.translate import models as M
from bench.translate import run as tl
from tests.helpers import DEVICE
from tests.tolerance import assert_within_2x

# ------------------------------------------------------------------------------------------------ data


def test_the_synthetic_pair_is_a_function_of_its_seed():
    a = D.synthetic_pairs(3, 50, 60, 200, "train")
    assert a == D.synthetic_pairs(3, 50, 60, 200, "train")
    assert a != D.synthetic_pairs(4, 50, 60, 200, "train")
    assert a != D.synthetic_pairs(3, 50, 60, 200, "test")


@pytest.mark.parametrize("length", [1, 2, 3, 4, 5, 7, 12, 25, 41, 60])
def test_sentences_have_the_length_asked_for(length):
    lex = D.lexicon(0, 200)
    for seed in range(20):
        src, tgt = D.render(lex, D.sentence_tree(random.Random(seed), lex, length))
        assert len(src.split()) == length
        assert len(tgt.split()) == length          # one target word per source word


def test_the_held_out_set_covers_every_bucket():
    test = D.test_pairs(0, 5, 60, 200)
    seen = {}
    for s, _ in test:
        b = D.bucket_of(len(s.split()))
        seen[b] = seen.get(b, 0) + 1
    assert seen == {D.bucket_name(lo, hi): 5 for lo, hi in D.BUCKETS}
    # a --max-len below the last bucket leaves the buckets past it out, and the one it cuts keeps its length
    assert max(len(s.split()) for s, _ in D.test_pairs(0, 5, 12, 200)) <= 12


def test_the_transduction_reorders_and_agrees():
    """Adjectives after the noun in reverse order, the verb last in a subordinate clause, and the verb's
    ending set by its subject's head noun, not by the noun of a phrase attached to it."""
    lex = D.lexicon(0, 200)
    noun = lambda i, plural=False, det="the", adjs=(), pp=None: {  # noqa: E731
        "det": det, "noun": i, "plural": plural, "adjs": list(adjs), "pp": pp}
    g0 = [i for i, g in enumerate(lex.gender) if g == 0]
    g1 = [i for i, g in enumerate(lex.gender) if g == 1]
    subj = noun(g0[0], adjs=[0, 1], pp={"prep": 0, "np": noun(g1[0], plural=True)})
    tree = {"clauses": [{"subj": subj, "verb": 0, "obj": None},
                        {"subj": noun(g1[1], plural=True), "verb": 1, "obj": noun(g0[1], det="a")}]}
    src, tgt = D.render(lex, tree)
    assert src.split() == ["the", lex.adjs[0], lex.adjs[1], lex.nouns[g0[0]], lex.preps[0], "the",
                           lex.nouns[g1[0]] + "s", lex.verbs[0], "that", "the", lex.nouns[g1[1]] + "s",
                           lex.verbs[1], "a", lex.nouns[g0[1]]]
    assert tgt.split() == ["le", lex.t_nouns[g0[0]], lex.t_adjs[1], lex.t_adjs[0], lex.t_preps[0], "las",
                           lex.t_nouns[g1[0]] + "i", lex.t_verbs[0] + "o",       # masculine singular subject
                           "ke", "las", lex.t_nouns[g1[1]] + "i", "un", lex.t_nouns[g0[1]],
                           lex.t_verbs[1] + "an"]                               # feminine plural, verb last


def test_corpus_files_are_read_and_split(tmp_path):
    src, tgt = tmp_path / "s.txt", tmp_path / "t.txt"
    src.write_text("".join(f"source {i} words\n" for i in range(50)))
    tgt.write_text("".join(f"target {i} words\n" for i in range(50)))
    pairs = D.load_corpus(str(src), str(tgt))
    train, test = D.split_corpus(pairs, 5)
    assert len(pairs) == 50 and len(test) == 5 and len(train) == 45 and not set(train) & set(test)


def test_a_corpus_trains_sentencepiece(tmp_path):
    pairs = D.synthetic_pairs(0, 300, 12, 60, "train")
    v = D.SentencePieceVocab([s for s, _ in pairs], 100)
    v.save(str(tmp_path / "source.model"))
    assert (tmp_path / "source.model").stat().st_size > 1000
    ids = v.encode(pairs[0][0])
    assert min(ids) >= len(D.SPECIALS) - 1 and v.decode(ids) == pairs[0][0]


# ------------------------------------------------------------------------------------------------ models

def _batch(B=2, S=(5, 3), T=4, vocab=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    src = torch.zeros(B, max(S), dtype=torch.long)
    for b, n in enumerate(S):
        src[b, :n] = torch.randint(4, vocab, (n,), generator=g)
    tgt = torch.randint(4, vocab, (B, T), generator=g)
    tgt[:, 0] = D.BOS
    return src.to(DEVICE), torch.tensor(S, device=DEVICE), tgt.to(DEVICE)


def _params(model, dtype):
    return {k: v.detach().to(dtype) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", M.MODELS)
def test_each_model_on_the_kernels_matches_its_reference(name):
    """Logits and every parameter's gradient, kernels in fp32 against the references in fp64 (the 2x rule)."""
    torch.manual_seed(0)
    ref = M.build(name, 24, 26, 16, 1, "torch").to(DEVICE)
    state = ref.state_dict()
    ours = M.build(name, 24, 26, 16, 1, "kernels").to(DEVICE)
    ours.load_state_dict(state)
    ref64 = M.build(name, 24, 26, 16, 1, "torch").to(DEVICE).double()
    ref64.load_state_dict(_params(ref, torch.float64))
    src, src_len, tgt = _batch()
    g = torch.Generator().manual_seed(1)
    w = torch.randn(2, 4, 26, generator=g).to(DEVICE)
    outs = []
    for m in (ours, ref64, ref):
        logits = m(src, src_len, tgt)
        (logits * w.to(logits.dtype)).sum().backward()
        outs.append(logits)
    assert_within_2x("logits", outs[0], outs[1], outs[2], extra_atol=torch.finfo(torch.float32).eps)
    grads = [dict((k, p.grad) for k, p in m.named_parameters()) for m in (ours, ref64, ref)]
    scale = max(g.abs().max().item() for g in grads[1].values() if g is not None)
    for k, g64 in grads[1].items():
        if g64 is None:
            continue
        assert grads[0][k] is not None, f"no gradient for {k}"
        assert_within_2x(f"grad of {k}", grads[0][k], g64, grads[2][k],
                         extra_atol=2 * torch.finfo(torch.float32).eps * scale)


@pytest.mark.parametrize("name", M.MODELS)
def test_greedy_steps_equal_the_teacher_forced_forward(name):
    """Decoding step by step gives the logits the full forward gives on the decoded prefix, and its
    argmax is the decoded word at every position."""
    torch.manual_seed(0)
    model = M.build(name, 24, 26, 16, 1, "torch").to(DEVICE).eval()
    src, src_len, _ = _batch(B=3, S=(5, 2, 4))
    with torch.no_grad():
        memory, state, y, steps = model.encode(src, src_len), None, torch.full((3,), D.BOS, device=DEVICE), []
        for _ in range(6):
            logits, state, _ = model.step(memory, state, y)
            steps.append(logits)
            y = logits.argmax(-1)
        decoded = torch.stack([s.argmax(-1) for s in steps], 1)
        prefix = torch.cat([torch.full((3, 1), D.BOS, device=DEVICE), decoded[:, :-1]], 1)
        full = model(src, src_len, prefix)
    torch.testing.assert_close(torch.stack(steps, 1), full, atol=1e-5, rtol=1e-5)
    toks, _ = M.greedy(model, src, src_len, 6)
    for b in range(3):
        row = decoded[b].tolist()
        n = row.index(D.EOS) + 1 if D.EOS in row else 6
        assert toks[b, :n].tolist() == row[:n] and (toks[b, n:] == D.PAD).all()


@pytest.mark.parametrize("name", M.MODELS)
def test_the_kernels_decode_as_the_references_do(name):
    """Greedy decoding through the kernels' decoder steps (the LSTM step kernel at T = 1, the cell, the
    additive kernel and flash attention at Nq = 1) gives the references' words and step logits."""
    torch.manual_seed(0)
    ref = M.build(name, 24, 26, 16, 1, "torch").to(DEVICE).eval()
    ours = M.build(name, 24, 26, 16, 1, "kernels").to(DEVICE).eval()
    ours.load_state_dict(ref.state_dict())
    src, src_len, _ = _batch()
    a, wa = M.greedy(ours, src, src_len, 4, weights=True)
    b, wb = M.greedy(ref, src, src_len, 4, weights=True)
    assert torch.equal(a, b)
    with torch.no_grad():
        y = torch.full((2,), D.BOS, device=DEVICE)
        la = ours.step(ours.encode(src, src_len), None, y)[0]
        lb = ref.step(ref.encode(src, src_len), None, y)[0]
    torch.testing.assert_close(la, lb, atol=1e-5, rtol=1e-4)
    if name != "encdec":
        torch.testing.assert_close(wa, wb, atol=1e-5, rtol=1e-4)
        assert torch.allclose(wa.sum(-1), torch.ones(()), atol=1e-5)
        assert (wa[1, :, 3:] == 0).all()           # the second sentence's padding is never attended


def test_the_gpu_defaults_fit_the_kernels():
    """At the GPU's defaults (the synthetic pair's vocabularies at --vocab 4000) the attention models'
    matched widths stay within the kernels' 256; a wider transformer is refused before any work."""
    gpu = tl.defaults(quick=True, gpu=True)
    vocab = gpu["vocab"] + 4
    widths = M.match_widths(M.MODELS, vocab, int(vocab * 1.1), gpu["d_model"], gpu["layers"])
    tl.check_widths(widths, "kernels")
    wide = M.match_widths(M.MODELS, vocab, int(vocab * 1.1), 256, gpu["layers"])
    with pytest.raises(tl.TranslateError, match="past the attention kernels' 256"):
        tl.check_widths(wide, "kernels")
    tl.check_widths(wide, "torch")                  # the references take any width


def test_widths_match_the_transformers_parameters():
    widths = M.match_widths(M.MODELS, 200, 220, 64, 1)
    target = M.count_params("transformer", 200, 220, 64, 1)
    for m, w in widths.items():
        assert w % 2 == 0 and abs(M.count_params(m, 200, 220, w, 1) / target - 1) <= 0.10


# ------------------------------------------------------------------------------------------------ BLEU

def test_bleu_is_sacrebleus():
    import sacrebleu
    hyps = ["the cat sat on the mat", "a dog ran", "x y z"]
    refs = ["the cat sat on a mat", "a dog ran", "p q r"]
    lengths = [6, 3, 3]
    got = tl.bleu_scores(hyps, refs, lengths)
    assert got["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert got["bleu_1_4"] == pytest.approx(sacrebleu.corpus_bleu(hyps[1:], [refs[1:]]).score)
    assert got["bleu_5_10"] == pytest.approx(sacrebleu.corpus_bleu(hyps[:1], [refs[:1]]).score)
    assert tl.bleu_scores(refs, refs, lengths)["bleu"] == pytest.approx(100.0)
    assert "bleu_40_plus" not in got               # a bucket with no sentence has no score


# ------------------------------------------------------------------------------------------------ the command

TINY = ["--pairs", "300", "--max-len", "12", "--vocab", "60", "--d-model", "16", "--batch", "8",
        "--test-per-bucket", "2", "--eval-every", "3", "--no-progress"]


def _one_line_error(capsys, code, expect):
    err = capsys.readouterr().err
    assert code == 2 and expect in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("case, expect", [
    ("mismatched", "has 3 lines but"),
    ("empty", "is empty"),
    ("model", "unknown model(s) ['gnmt']"),
    ("twice", "names a model twice"),
    ("vocab", "--vocab must be 40 to 8000"),
])
def test_bad_input_is_one_line_and_exit_2(case, expect, tmp_path, capsys):
    src, tgt = tmp_path / "s.txt", tmp_path / "t.txt"
    src.write_text("a b\nc d\ne f\n")
    tgt.write_text("" if case == "empty" else "x y\nz w\n")
    argv = ["translate", "--out", str(tmp_path / "out"), "--tokens", "10", *TINY]
    argv += {"model": ["--models", "gnmt"], "twice": ["--models", "encdec,encdec"],
             "vocab": ["--vocab", "20000"]}.get(case, ["--corpus", str(src), str(tgt)])
    _one_line_error(capsys, cli(argv), expect)
    assert not (tmp_path / "out").exists()          # refused before anything was written


def test_quick_run_writes_every_output(tmp_path, capsys):
    out = tmp_path / "t"
    assert cli(["translate", "--out", str(out), "--tokens", "600", *TINY]) == 0
    files = set(os.listdir(out))
    assert {"translate.csv", "translate.json", "REPORT.md", "bleu_by_length.png", "alignment.png"} <= files
    rows = list(csv.DictReader(open(out / "translate.csv")))
    assert {r["model"] for r in rows} == set(M.MODELS) and all(r["status"] == "ok" for r in rows)
    for m in M.MODELS:
        mine = [r for r in rows if r["model"] == m]
        assert mine[0]["step"] == "0" and mine[-1]["final"] == "True" and len(mine) >= 2
        assert all(r["bleu"] != "" and r["bleu_1_4"] != "" and r["bleu_11_14"] != "" for r in mine)
    assert sorted(os.listdir(out / "alignment")) == ["bahdanau-torch.json", "luong-torch.json",
                                                     "transformer-torch.json"]
    report = (out / "REPORT.md").read_text()
    assert "| 5-10 | 35-40 |" in report and "Time to **BLEU" in report and "CPU-only machine" in report
    assert "encdec" in capsys.readouterr().out


def test_resume_continues_a_model(tmp_path, monkeypatch):
    out = tmp_path / "t"
    argv = ["translate", "--out", str(out), "--tokens", "900", "--models", "encdec,luong", *TINY]
    monkeypatch.setenv(tr.STOP_AFTER_EVALS_ENV, "3")        # encdec's first three evaluations, then Ctrl-C
    assert cli(argv) == 130
    rows = list(csv.DictReader(open(out / "translate.csv")))
    assert [r["model"] for r in rows] == ["encdec"] * 3 and rows[-1]["final"] == "False"
    monkeypatch.delenv(tr.STOP_AFTER_EVALS_ENV)
    assert cli(argv + ["--resume"]) == 0
    rows = list(csv.DictReader(open(out / "translate.csv")))
    steps = [int(r["step"]) for r in rows if r["model"] == "encdec"]
    assert steps[:3] == [0, 3, 6] and steps == sorted(set(steps))   # went on from step 6, nothing redone
    assert [r["final"] for r in rows if r["model"] == "encdec"][-1] == "True"
    assert any(r["model"] == "luong" and r["final"] == "True" for r in rows)
    meta = json.load(open(out / "translate.json"))
    assert meta["finished"]


def test_resume_with_other_settings_is_refused(tmp_path, capsys):
    out = tmp_path / "t"
    argv = ["translate", "--out", str(out), "--tokens", "100", "--models", "encdec", *TINY]
    assert cli(argv) == 0
    capsys.readouterr()
    _one_line_error(capsys, cli(argv[:-1] + ["--seed", "5", "--no-progress", "--resume"]), "different settings (seed)")


def test_a_corpus_run_trains_on_its_pieces(tmp_path):
    pairs = D.synthetic_pairs(1, 400, 12, 60, "train")
    src, tgt = tmp_path / "s.txt", tmp_path / "t.txt"
    src.write_text("".join(s + "\n" for s, _ in pairs))
    tgt.write_text("".join(t + "\n" for _, t in pairs))
    out = tmp_path / "t"
    assert cli(["translate", "--out", str(out), "--tokens", "300", "--models", "encdec,luong",
                "--corpus", str(src), str(tgt), *TINY]) == 0
    meta = json.load(open(out / "translate.json"))
    assert "sentencepiece" in meta["corpus"]["source"] and meta["corpus"]["test_pairs"] >= 10
    assert (out / "source.model").exists() and (out / "target.model").exists()
    rows = list(csv.DictReader(open(out / "translate.csv")))
    assert {r["model"] for r in rows} == {"encdec", "luong"} and all(r["bleu"] != "" for r in rows)


def test_a_new_run_does_not_resume_an_older_runs_checkpoints(tmp_path, monkeypatch, capsys):
    """A run without --resume into a folder removes its models' old checkpoints; a checkpoint from other
    settings is refused by --resume, naming it."""
    out = tmp_path / "t"
    argv = ["translate", "--out", str(out), "--tokens", "300", "--models", "encdec", *TINY]
    assert cli(argv) == 0
    monkeypatch.setenv(tr.STOP_AFTER_EVALS_ENV, "1")      # a new run with another seed, stopped at once
    assert cli(argv[:-1] + ["--seed", "3", "--no-progress"]) == 130
    ck = out / "checkpoints" / "encdec-torch.pt"
    saved = torch.load(ck, weights_only=False)          # the new run's own, at its first evaluation
    assert saved["config"]["seed"] == 3 and saved["step"] == 0
    monkeypatch.delenv(tr.STOP_AFTER_EVALS_ENV)
    assert cli(argv[:-1] + ["--seed", "3", "--no-progress", "--resume"]) == 0
    saved = torch.load(ck, weights_only=False)
    saved["config"]["lr"] = 0.5                                          # as if another run had written it
    torch.save(saved, ck)
    rows = [r for r in csv.DictReader(open(out / "translate.csv"))]
    with open(out / "translate.csv", "w", newline="") as f:              # its final row gone: --resume reads ck
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows[:-1])
    capsys.readouterr()
    _one_line_error(capsys, cli(argv[:-1] + ["--seed", "3", "--no-progress", "--resume"]), "other settings or data")

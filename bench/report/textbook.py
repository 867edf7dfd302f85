"""What the report measures against: the textbook's table (its four rows and a fifth beyond it), the history
measured by others, the verdict rule, and the claims of the other tables.  Every figure's source is in
docs/sources.md."""
from __future__ import annotations


BEYOND = "beyond the textbook: parallel-scan RNN"

ROWS = ("LSTM (sequential)", "LSTM (optimized)", "ConvSeq2Seq", "Transformer", BEYOND)

REFERENCE = "Transformer"

# The textbook gives no figure for a parallel recurrence: its §1.2 says no recurrence parallelises, so the
# claim it implies for one is the sequential LSTM's ratio.
IMPLIED = {BEYOND: "LSTM (sequential)"}

# The chapter's figures (V100, no source given; its §1.8, docs/sources.md).
TEXTBOOK = {
    "LSTM (sequential)": ("15-25%", 8_000, "~8,000"),
    "LSTM (optimized)": ("30-40%", 15_000, "~15,000"),
    "ConvSeq2Seq": ("50-60%", 25_000, "~25,000"),
    "Transformer": ("80-95%", 50_000, "~50,000+"),
    BEYOND: ("not given", None, "not given (§1.2: \"no parallelization possible\")"),
}

# What was measured (docs/sources.md, "History"): text, and tokens/s ratios to the Transformer
# where the sources give tokens/s (their token counts and model sizes differ: compare ratios).
HISTORY = {
    "LSTM (sequential)": ("none found", ""),
    "LSTM (optimized)": ("GNMT v2 LSTM: 21,346 tok/s FP32, 66,050 AMP (1×V100); 1247 s to target (MLPerf v0.6)",
                         f"{21346 / 7635:.1f} FP32, {66050 / 32153:.1f}-{66050 / 23821:.1f} AMP"),
    "ConvSeq2Seq": ("\"an order of magnitude faster\" than GNMT (Gehring et al.)", ""),
    "Transformer": ("Transformer-big: 7,635 tok/s FP32, 23,821-32,153 AMP (1×V100); 1201 s to target (MLPerf v0.6)",
                    "1"),
    BEYOND: ("minGRU / minLSTM: 175× faster than GRU / LSTM at T=512, training step (Feng et al. 2024)", ""),
}

SOURCES = ("History sources (docs/sources.md in the seqbench repository): NVIDIA DeepLearningExamples GNMT and Transformer READMEs "
           "(WMT16/WMT14 EN-DE, 1×V100); MLPerf training v0.6, one DGX-1 (8×V100), GNMT to BLEU 24.0 and the "
           "Transformer to BLEU 25.0 (different targets); Gehring et al. 2017 (arXiv 1705.03122).  Token counts and "
           "model sizes differ between sources (GNMT 160.7M, Transformer-big 210.8M parameters): compare ratios.  Feng et al. "
           "2024, arXiv 2410.01201 (minGRU, minLSTM).")

RULE = ("Verdict, per mode and batch: a row's ratio is its best accurate tokens/s over the Transformer row's at "
        "the same shape, with an interval from the two points' repetitions (p20/p80 bounds: the row's slowest "
        "p80 time against the Transformer's fastest p20, and the reverse).  The textbook's ratio is its tokens/s over "
        "50,000.  **holds**: the whole interval is at most twice the textbook's ratio (the row trails the "
        "Transformer by at least half the claimed factor); **does not hold**: the whole interval is above it; "
        "**inconclusive**: the interval straddles it; **not measured**: the row or the Transformer has no stable, "
        "accurate measurement there; **unstable: not judged**: its points there all stayed over the spread limit "
        "(`unstable`), which decides nothing and is named in its row.  On a CPU the verdict column says **not judged**: the claim is about GPUs (the "
        "ratios are still shown).  The fifth row has no figure in the textbook; its §1.2 says no recurrence "
        "parallelises, so it is judged against the sequential LSTM's ratio (0.16), the claim implied for any "
        "recurrence.")

NOT_JUDGED = "not judged: the claim is about GPUs"


def textbook_ratio(label: str) -> float:
    """The row's tokens/s over the Transformer's in the textbook (the implied row's for the fifth)."""
    return TEXTBOOK[IMPLIED.get(label, label)][1] / TEXTBOOK[REFERENCE][1]


GUIDE_CLAIM = ("Textbook §1.4, \"LSTM vs GRU: quick guide\": the GRU has fewer parameters and is faster to "
               "train and to run (no source given).")

SCORING = {"Luong dot": ("h_jᵀ s_i", "O(d)"), "Luong general": ("h_jᵀ W s_i", "O(d²)"),
           "Bahdanau (additive)": ("vᵀ tanh(W₁h_j + W₂s_i)", "O(d²)")}

SCORING_CLAIM = ("Textbook §1.7: the dot score \"works nearly as well … and it's much faster because it's just a "
                 "matrix multiply\"; the additive and general scores cost O(d²) per query-key pair as it states them.")

RECURRENCES = (("rnn", "RNN"), ("gru", "GRU"), ("lstm", "LSTM"), ("mingru", "minGRU"), ("minlstm", "minLSTM"))

RECURRENCE_CLAIM = ("Textbook §1.2 and §1.5: a recurrence runs step by step, O(n) sequential operations, \"no "
                    "parallelization possible\".  Feng et al. 2024 (minGRU, minLSTM): gates that read only x make the "
                    "recurrence linear, a parallel scan; they report 175× the GRU's / LSTM's speed at T = 512 "
                    "(training step).")

# %% [markdown]
# ## Exercises
# Solutions are in the collapsed cells below each exercise (click the "..." to open one). Try first.
#
# **1 (easy) · How many passages?** Compute recall@k of both retrievers for k = 1, 2, 3, 5 and 10 with
# `bm25_search`, `dense_search` and `recall_at_k`. Predict first: does recall keep growing with k? What would
# putting 10 passages in every prompt cost, in prompt tokens, going by the table of prompt lengths above?

# %% tags=["solution"]
DEPTHS = (1, 2, 3, 5, 10)
deep_bm25, deep_dense = bm25_search(index, questions, max(DEPTHS)), dense_search(encoder, passage_vectors, questions, max(DEPTHS))
depth_table = pd.DataFrame({name: {k: recall_at_k(hits, held_out["focus"], corpus["focus"], k) for k in DEPTHS}
                            for name, hits in (("BM25", deep_bm25), ("dense", deep_dense))})
print(depth_table.rename_axis("k").round(3).to_string())
per_passage = extra_tokens / K
print(f"each passage adds about {per_passage:.0f} prompt tokens: 10 passages would add about {10 * per_passage:.0f}")
# Recall can only grow with k, and it flattens: once the right topic is in the list, more passages add
# tokens, time and distraction, not facts. A small model also reads a long prompt less well.

# %% [markdown]
# **2 (medium) · Two retrievers in one.** Reciprocal rank fusion (Cormack et al., 2009) merges ranked lists
# without comparing their scores: a passage at rank r in a list earns 1 / (60 + r), and passages are sorted
# by their sum over the lists. Fuse the top 10 of BM25 and of the dense retriever and compute recall@K of the
# fused list. Does fusion beat the better of the two here?

# %% tags=["solution"]
def fuse(*ranked_lists, constant=60, k=10):
    scores = {}
    for ranked in ranked_lists:
        for rank, passage in enumerate(ranked, start=1):
            scores[passage] = scores.get(passage, 0.0) + 1.0 / (constant + rank)
    return sorted(scores, key=lambda p: (-scores[p], p))[:k]


fused = [fuse(b, d) for b, d in zip(deep_bm25, deep_dense)]
print(f"recall@{K}: BM25 {recall_at_k(deep_bm25, held_out['focus'], corpus['focus'], K):.3f}, dense "
      f"{recall_at_k(deep_dense, held_out['focus'], corpus['focus'], K):.3f}, fused "
      f"{recall_at_k(fused, held_out['focus'], corpus['focus'], K):.3f}")
# Fusion helps when the two retrievers miss different questions; when one of them already finds the topic for
# nearly every question, there is little left to gain, and the fused list can even push a good passage down.

# %% [markdown]
# **3 (hard) · Facts, or just medical words?** Retrieval lowered the NLL of the reference answers. Maybe any
# medical text in the prompt would do that. Build a control: give each of the first `answered` questions the
# passages retrieved for *another* question about a different topic, measure the SFT model's per-question NLL
# of the references with `answer_nll_per_question`, and compare it, question by question (`paired_difference`),
# with the SFT model's NLL without passages and with the right ones (`scores["sft"]` and `scores["sft_rag"]`).

# %% tags=["solution"]
first = list(range(answered))
wrong = []
for i in first:  # the next question (cyclically) about another topic lends its passages
    j = next(j % len(questions) for j in range(i + 1, i + len(questions))
             if topic_key(held_out["focus"][j % len(questions)]) != topic_key(held_out["focus"][i]))
    wrong.append(with_passages(questions[i], [passages[p] for p in dense_hits[j][:K]]))
wrong_nll = answer_nll_per_question(model, tokenizer, wrong, [references[i] for i in first], desc="passages of another topic")
alone = scores["sft"]["nll_per_question"][:answered]
for label, values in (("passages of another topic", wrong_nll), ("retrieved passages", scores["sft_rag"]["nll_per_question"][:answered])):
    g = paired_difference(values, alone)
    print(f"SFT model, {answered} questions, {label} instead of none: NLL {g['mean']:+.3f} per question "
          f"({g['low']:+.3f} to {g['high']:+.3f})")
# If the wrong-topic passages lower the NLL too, part of the gain is the register of medical prose; what the
# right passages add beyond that is what the facts about the right disease bring.

import torch

import common as C
from conftest import TRAIN, read_jsonl

ROWS = read_jsonl(TRAIN)


def judge_prompt(tok, row):
    return C.chat_prompt_ids(tok, C.judge_messages(row["prompt"], row["rubric"], row["response_a"], row["response_b"]))


def test_chat_template_prompts(tok):
    row = ROWS[0]
    text = tok.decode(judge_prompt(tok, row))
    assert text.startswith("<|im_start|>user\n" + C.JUDGE_TEMPLATE[:60])  # one user message, as in the paper
    assert text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")  # thinking disabled
    for part in (row["prompt"], row["rubric"], row["response_a"], row["response_b"]):
        assert part in text
    assert text.index("Response A:\n" + row["response_a"]) < text.index("Response B:\n" + row["response_b"])
    rtext = tok.decode(C.chat_prompt_ids(tok, C.rubric_messages(row["prompt"])))
    assert row["prompt"] in rtext and "[Hard Rule]" in rtext
    a, b, label = C.swap_pair(row, True)
    assert (a, b) == (row["response_b"], row["response_a"]) and label != row["winner"]
    assert C.completion_ids(tok, "x")[-1] == tok.eos_token_id


def test_generate_matches_hf_generate_and_prefix_sharing(tiny_model, tok):
    model = C.attach_lora(C.load_base_model(str(tiny_model)), r=8)
    prompts = [judge_prompt(tok, ROWS[0]), C.chat_prompt_ids(tok, C.rubric_messages(ROWS[1]["prompt"]))]
    assert len(prompts[0]) != len(prompts[1])  # left padding is exercised
    ours = C.generate(model, tok, prompts, n=1, max_new_tokens=16, temperature=0)
    ids, mask = C.left_pad(prompts, tok.pad_token_id, "cpu")
    ref = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=16, do_sample=False,
                         pad_token_id=tok.pad_token_id)[:, ids.shape[1]:]
    assert torch.equal(ours.completion_ids, ref)
    assert len(set(ref[0].tolist())) > 3  # the random model does not just repeat one token
    shared = C.generate(model, tok, prompts, n=3, max_new_tokens=16, temperature=0, share_prefix=True)
    copies = C.generate(model, tok, prompts, n=3, max_new_tokens=16, temperature=0, share_prefix=False)
    assert torch.equal(shared.completion_ids, copies.completion_ids)
    assert torch.equal(shared.completion_ids[0], ours.completion_ids[0])
    assert torch.equal(shared.completion_ids[3], ours.completion_ids[1])
    torch.manual_seed(0)
    s1 = C.generate(model, tok, prompts, n=3, max_new_tokens=16, temperature=1.0)
    torch.manual_seed(0)
    s2 = C.generate(model, tok, prompts, n=3, max_new_tokens=16, temperature=1.0)
    assert torch.equal(s1.completion_ids, s2.completion_ids)
    assert s1.completion_ids[0].tolist() != s1.completion_ids[1].tolist()  # samples differ


def test_completion_mask_stops_at_eos(tiny_model, tok):
    model = C.load_base_model(str(tiny_model))
    bias = torch.zeros(len(tok))
    bias[tok.eos_token_id] = 1e4  # EOS is the only likely token: every completion is exactly [EOS]
    model.lm_head.register_forward_hook(lambda mod, inp, out: out + bias)
    ro = C.generate(model, tok, [judge_prompt(tok, ROWS[0])], n=2, max_new_tokens=8, temperature=1.0)
    assert ro.completion_ids.shape[1] == 1 and ro.completion_mask.tolist() == [[1], [1]]
    assert ro.texts == ["", ""] and not ro.truncated.any()


def test_token_logprobs_equal_full_logits(tiny_model, tok):
    model = C.load_base_model(str(tiny_model))
    prompts = [judge_prompt(tok, ROWS[2]), C.chat_prompt_ids(tok, C.rubric_messages(ROWS[2]["prompt"]))]
    ro = C.generate(model, tok, prompts, n=2, max_new_tokens=6, temperature=1.0)
    pids, pmask = ro.prompt_ids.repeat_interleave(2, 0), ro.prompt_mask.repeat_interleave(2, 0)
    lp = C.token_logprobs(model, pids, pmask, ro.completion_ids, temperature=0.7)
    with torch.no_grad():
        for i in range(4):  # one unpadded sequence at a time, full logits
            p = pids[i][pmask[i].bool()]
            seq = torch.cat([p, ro.completion_ids[i]])[None]
            logits = model(input_ids=seq).logits[0, len(p) - 1:-1] / 0.7
            ref = torch.log_softmax(logits, -1).gather(-1, ro.completion_ids[i][:, None]).squeeze(-1)
            torch.testing.assert_close(lp[i], ref, atol=1e-4, rtol=1e-4)


def test_lora_grads_over_4bit_after_generate_match_full_precision(tiny_model, tok):
    """Known bitsandbytes trap: its CPU repack after a no-grad forward must not corrupt LoRA grads."""
    import bitsandbytes as bnb
    q = C.load_base_model(str(tiny_model), load_4bit=True, device=torch.device("cpu"))
    ref = C.load_base_model(str(tiny_model), device=torch.device("cpu"))
    # the full-precision reference holds exactly the dequantized 4-bit weights
    qmods = dict(q.named_modules())
    n4 = 0
    with torch.no_grad():
        for name, m in ref.named_modules():
            if isinstance(qmods.get(name), bnb.nn.Linear4bit):
                w = bnb.functional.dequantize_4bit(qmods[name].weight.data, qmods[name].weight.quant_state)
                m.weight.copy_(w.to(m.weight.dtype))
                n4 += 1
    assert n4 > 0
    torch.manual_seed(1)
    qm = C.attach_lora(q, r=4)
    torch.manual_seed(1)
    rm = C.attach_lora(ref, r=4)
    for m in (qm, rm):  # non-zero B so that both A and B get gradients
        for n, p in m.named_parameters():
            if "lora_B" in n:
                torch.nn.init.constant_(p, 0.01)
    prompt = [judge_prompt(tok, ROWS[3])]
    C.generate(qm, tok, prompt, n=2, max_new_tokens=4, temperature=1.0)  # the trap's trigger
    qm.train()
    ids = torch.tensor(prompt)
    for m in (qm, rm):
        m(input_ids=ids, labels=ids).loss.backward()
    qg = {n: p.grad for n, p in qm.named_parameters() if p.requires_grad}
    rg = {n: p.grad for n, p in rm.named_parameters() if p.requires_grad}
    assert qg.keys() == rg.keys() and len(qg) > 0
    for n in qg:
        torch.testing.assert_close(qg[n], rg[n], atol=1e-4, rtol=1e-3, msg=n)


def test_finished_rows_leave_the_decode_batch_without_changing_any_completion(tiny_model, tok, monkeypatch):
    model = C.load_base_model(str(tiny_model))
    eos, widths = tok.eos_token_id, []

    def stop_after_some_tokens(module, args, kwargs, out):  # a generated id divisible by 7 is followed by EOS
        ids = kwargs["input_ids"]
        widths.append(ids.shape[0])
        if ids.shape[1] == 1:  # a decode step (the prefill's last token is the chat template's)
            out.logits[:, -1, eos] += 1e4 * (ids[:, -1] % 7 == 0)
        return out

    model.register_forward_hook(stop_after_some_tokens, with_kwargs=True)
    prompts = [judge_prompt(tok, r) for r in ROWS[:8]] + [C.chat_prompt_ids(tok, C.rubric_messages(r["prompt"])) for r in ROWS[:8]]
    runs = {}
    for drop in (False, True):
        monkeypatch.setattr(C, "DROP_FINISHED", drop)
        widths.clear()
        runs[drop] = (C.generate(model, tok, prompts, n=1, max_new_tokens=10, temperature=0), widths[1:])
    (kept, kept_widths), (dropped, dropped_widths) = runs[False], runs[True]
    lengths = kept.completion_mask.sum(1)
    assert lengths.min() < lengths.max() and kept.truncated.any() and not kept.truncated.all()  # rows end apart
    assert set(kept_widths) == {16} and dropped_widths[-1] < 16  # the batch shrank as rows finished
    assert torch.equal(kept.completion_ids, dropped.completion_ids) and kept.texts == dropped.texts
    assert torch.equal(kept.completion_mask, dropped.completion_mask) and torch.equal(kept.truncated, dropped.truncated)

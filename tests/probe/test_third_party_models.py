"""Probing models nobody here wrote: Hugging Face ResNet and ConvNeXt built from small configs
(random weights, no download), against float64 references from independent hooks."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers", reason="needs the hf extra: pip install 'varprobe[hf]'")

import varprobe  # noqa: E402

from .float64 import biased_var, shift_ratio, value  # noqa: E402


NAN_DOCUMENTED = {"gw.bias_corr", "gw.sign_persistence"}


def resnet():
    cfg = transformers.ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                                    layer_type="basic", num_labels=3)
    return transformers.ResNetForImageClassification(cfg)


def convnext():
    cfg = transformers.ConvNextConfig(num_channels=3, hidden_sizes=[8, 16], depths=[1, 1], num_stages=2,
                                      patch_size=2, num_labels=3)
    return transformers.ConvNextForImageClassification(cfg)


def reference(model, names, x, y):
    """float64 outputs and output gradients of the modules ``names``, from our own hooks."""
    seen: dict[str, dict[str, torch.Tensor]] = {n: {} for n in names}
    handles = []
    for n in names:
        def fwd(module, args, out, n=n):
            seen[n]["out"] = out.detach().to(torch.float64).clone()
            out.register_hook(lambda g, n=n: seen[n].__setitem__("grad", g.detach().to(torch.float64).clone()))
        handles.append(model.get_submodule(n).register_forward_hook(fwd))
    model(pixel_values=x, labels=y).loss.backward()
    for h in handles:
        h.remove()
    model.zero_grad()
    return seen


def probed_step(model, x, y):
    with varprobe.Probe(model, modes=("train",)) as probe:
        loss = model(pixel_values=x, labels=y).loss
        loss.backward()
        probe.step(loss=loss)
        frame = probe.frame()
    model.zero_grad()
    return frame


@pytest.mark.parametrize("build, layers", [
    (resnet, ["resnet.embedder.embedder.convolution", "resnet.encoder.stages.1.layers.0.layer.1.normalization"]),
    (convnext, ["convnext.encoder.stages.0.layers.0.pwconv1", "convnext.encoder.stages.1.downsampling_layer.1"]),
])
def test_names_are_named_modules_values_finite_and_moments_equal_a_float64_reference(build, layers):
    torch.manual_seed(0)
    model = build().train()
    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 3, (4,))
    want = reference(model, layers, x, y)
    frame = probed_step(model, x, y)
    names = {n for n, _ in model.named_modules()}
    assert set(frame["layer"]) - {""} <= names
    assert {n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))} <= set(frame["layer"])
    bad = frame[~frame["value"].map(math.isfinite)]
    # NaN is documented for these two (no signal: a conv before BatchNorm, or a PWS kernel)
    assert set(bad["quantity"]) <= NAN_DOCUMENTED, bad[["layer", "quantity", "value"]].to_string()
    assert frame.loc[~frame["quantity"].isin(NAN_DOCUMENTED), "value"].map(math.isfinite).all()
    for n in layers:
        assert value(frame, n, "out.var") == pytest.approx(biased_var(want[n]["out"]), rel=1e-6)
        assert value(frame, n, "grad_out.var") == pytest.approx(biased_var(want[n]["grad"]), rel=1e-6)


def test_convnext_channels_first_layernorm_is_reduced_over_channels():
    """ConvNextLayerNorm(data_format="channels_first") is an nn.LayerNorm subclass applied to NCHW:
    its channel axis is 1. Fails while the probe takes axis -1 for every nn.LayerNorm."""
    torch.manual_seed(0)
    model = convnext().train()
    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 3, (4,))
    names = ["convnext.embeddings.layernorm", "convnext.encoder.stages.1.downsampling_layer.0"]
    want = reference(model, names, x, y)
    frame = probed_step(model, x, y)
    for n in names:
        out = want[n]["out"]  # (N, C, H, W)
        mu_c = out.mean(dim=(0, 2, 3))
        var_c = ((out - mu_c[None, :, None, None]) ** 2).mean(dim=(0, 2, 3))
        assert value(frame, n, "out.ch_sq_mean") == pytest.approx(float((mu_c ** 2).mean()), rel=1e-6)
        assert value(frame, n, "out.ch_var") == pytest.approx(float(var_c.mean()), rel=1e-6)


def bert():
    cfg = transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                  vocab_size=100, max_position_embeddings=64, hidden_dropout_prob=0.0,
                                  attention_probs_dropout_prob=0.0)
    return transformers.BertModel(cfg)


def vit():
    cfg = transformers.ViTConfig(image_size=16, patch_size=4, num_channels=3, hidden_size=32, num_hidden_layers=2,
                                 num_attention_heads=2, intermediate_size=64, num_labels=3, hidden_dropout_prob=0.0,
                                 attention_probs_dropout_prob=0.0)
    return transformers.ViTForImageClassification(cfg)


def transformer_step(model, names, call):
    """One probed training step of ``model`` (``call(model)`` gives the loss) with float64 outputs
    and output gradients of the modules ``names`` seen by our own hooks in the same forward."""
    seen: dict[str, dict[str, torch.Tensor]] = {n: {} for n in names}
    handles = []
    for n in names:
        def fwd(module, args, out, n=n):
            seen[n]["out"] = out.detach().to(torch.float64).clone()
            out.register_hook(lambda g, n=n: seen[n].__setitem__("grad", g.detach().to(torch.float64).clone()))
        handles.append(model.get_submodule(n).register_forward_hook(fwd))
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # ViT: the coverage warning (cls_token, ...)
        with varprobe.Probe(model, modes=("train",)) as probe:
            loss = call(model)
            loss.backward()
            probe.step(loss=loss)
            frame = probe.frame()
    for h in handles:
        h.remove()
    return probe, frame, seen


@pytest.mark.parametrize("build, call, prefix, missing", [
    (bert, lambda m: m(input_ids=torch.randint(0, 100, (3, 7))).last_hidden_state.square().mean(),
     "encoder.layer.0.attention.self.", set()),
    (vit, lambda m: m(pixel_values=torch.randn(3, 3, 16, 16), labels=torch.tensor([0, 1, 2])).loss,
     "vit.layers.0.attention.", {"vit.embeddings.cls_token", "vit.embeddings.position_embeddings"}),
])
def test_bert_and_vit_coverage_roles_and_attention_projections_against_float64(build, call, prefix, missing):
    """Every trainable parameter is recorded or named with its reason; the separate Q, K, V Linear
    layers of Hugging Face attention record as Linear layers (forward statistics included)."""
    torch.manual_seed(0)
    model = build().train()
    projections = [n for n, _ in model.named_modules() if n.startswith(prefix) and n.count(".") == prefix.count(".")
                   and n != prefix[:-1]][:3]
    assert len(projections) == 3, projections
    probe, frame, seen = transformer_step(model, projections, call)
    cov = probe.coverage
    assert set(cov.sizes) == {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(cov.missing) == missing and not cov.whole
    for name in missing:
        assert "which has child modules and no layout" in cov.missing[name]
    roles = frame.drop_duplicates("layer").set_index("layer")["role"]
    for n in projections:
        assert roles[n] == "linear"
        assert value(frame, n, "out.var") == pytest.approx(biased_var(seen[n]["out"]), rel=1e-6)
        assert value(frame, n, "grad_out.var") == pytest.approx(biased_var(seen[n]["grad"]), rel=1e-6)
        assert value(frame, n, "gw.shift_ratio") == pytest.approx(
            shift_ratio(model.get_submodule(n).weight.grad), rel=1e-6)
    assert set(roles[roles.index.str.endswith("LayerNorm") | roles.index.str.contains("layernorm")]) == {"norm"}
    if build is bert:
        emb = model.embeddings.word_embeddings.weight  # [vocab, dim]: output unit j is column j
        cols = emb.detach().to(torch.float64).t()
        assert roles["embeddings.word_embeddings"] == "embedding"
        assert value(frame, "embeddings.word_embeddings", "w.fan_var") == pytest.approx(
            float((cols.shape[1] * cols.var(1, unbiased=False)).mean()), rel=1e-6)
        assert value(frame, "embeddings.word_embeddings", "gw.shift_ratio") == pytest.approx(
            shift_ratio(emb.grad.t()), rel=1e-6)


def test_gpt2_conv1d_is_a_linear_layer_with_filters_on_axis_1():
    """transformers' Conv1D holds its weight as [in, out]: w.* and gw.* per output unit (column)."""
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=100, n_positions=32,
                                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = transformers.GPT2Model(cfg).train()
    ids = torch.randint(0, 100, (2, 9))
    probe, frame, _ = transformer_step(model, [], lambda m: m(input_ids=ids).last_hidden_state.square().mean())
    assert probe.coverage.complete, str(probe.coverage)
    name = "h.0.attn.c_attn"
    w = model.get_submodule(name).weight  # [32, 96]
    cols = w.detach().to(torch.float64).t()
    assert frame.loc[frame["layer"] == name, "role"].iloc[0] == "linear"
    assert value(frame, name, "w.fan_var") == pytest.approx(float((32 * cols.var(1, unbiased=False)).mean()), rel=1e-6)
    assert value(frame, name, "gw.shift_ratio") == pytest.approx(shift_ratio(w.grad.t()), rel=1e-6)


def test_tied_lm_head_bias_is_recorded_by_the_decoder_that_holds_it():
    """RoBERTa's masked-LM head holds its bias and ties it into its decoder Linear
    (``decoder.bias = bias``): the bias is recorded in the decoder's output. Fails while coverage
    looks only at the first module that holds a tied parameter (the head, not probed), and names it
    missing, "used in its own forward"."""
    torch.manual_seed(0)
    cfg = transformers.RobertaConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=40)
    model = transformers.RobertaForMaskedLM(cfg).train()
    assert model.lm_head.bias is model.lm_head.decoder.bias
    ids = torch.randint(0, 50, (2, 6))
    probe, frame, _ = transformer_step(model, [], lambda m: m(input_ids=ids, labels=ids).loss)
    cov = probe.coverage
    assert cov.complete, str(cov)
    assert set(cov.sizes) == {n for n, p in model.named_parameters() if p.requires_grad}
    assert cov.recorded["lm_head.bias"] == "in the output of lm_head.decoder"
    assert cov.warning() is None


def test_llama_rmsnorm_is_a_norm_over_the_last_axis_against_float64():
    """Hugging Face's LlamaRMSNorm (each model has its own RMSNorm class, none an nn.RMSNorm) is a
    norm whose channels are the hidden features (last axis), recorded by a layout: coverage is
    complete. Fails while it is a module without a layout: role "other", its weight "recorded
    whole", and channel statistics taken over axis 1 (the sequence positions)."""
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                   num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32)
    model = transformers.LlamaForCausalLM(cfg).train()
    ids = torch.randint(0, 50, (2, 8))
    names = ["model.layers.0.input_layernorm", "model.norm", "model.layers.1.self_attn.q_proj"]
    probe, frame, seen = transformer_step(model, names, lambda m: m(input_ids=ids, labels=ids).loss)
    cov = probe.coverage
    assert cov.complete, str(cov)
    assert set(cov.sizes) == {n for n, p in model.named_parameters() if p.requires_grad}
    roles = frame.drop_duplicates("layer").set_index("layer")["role"]
    assert set(roles[roles.index.str.contains("norm")]) == {"norm"}
    assert {roles[f"model.layers.{i}"] for i in range(2)} == {"block"}  # the residual stream, found
    for n in names:
        out, grad = seen[n]["out"], seen[n]["grad"]  # (batch, seq, hidden)
        assert value(frame, n, "out.var") == pytest.approx(biased_var(out), rel=1e-6)
        assert value(frame, n, "grad_out.var") == pytest.approx(biased_var(grad), rel=1e-6)
        per_feature = out.flatten(0, 1)
        assert value(frame, n, "out.ch_var") == pytest.approx(float(per_feature.var(0, unbiased=False).mean()),
                                                              rel=1e-6)
    q = model.get_submodule(names[2]).weight
    assert value(frame, names[2], "gw.shift_ratio") == pytest.approx(shift_ratio(q.grad), rel=1e-6)
    w = model.model.norm.weight.detach().to(torch.float64)
    assert value(frame, "model.norm", "norm.weight_mean") == pytest.approx(float(w.mean()), rel=1e-6)


def test_mixtral_fused_experts_are_recorded_as_a_leaf_module():
    """transformers' MixtralExperts holds every expert's weights as two 3-d parameters and has one
    child, its activation (no parameters): the probe hooks it as a leaf of role "other" (its output
    and output gradient, against float64 hooks) and coverage says the experts are recorded whole.
    Fails while a module with any child is a container: the expert weights, most of the model, are
    "not recorded", "used in its own forward, which no probe hook sees"."""
    torch.manual_seed(0)
    cfg = transformers.MixtralConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, num_key_value_heads=1, head_dim=8, num_local_experts=2,
                                     num_experts_per_tok=1, max_position_embeddings=32)
    model = transformers.MixtralForCausalLM(cfg).train()
    ids = torch.randint(0, 50, (2, 8))
    experts = "model.layers.1.mlp.experts"
    probe, frame, seen = transformer_step(model, [experts], lambda m: m(input_ids=ids, labels=ids).loss)
    cov = probe.coverage
    assert set(cov.sizes) == {n for n, p in model.named_parameters() if p.requires_grad}
    assert not cov.missing, str(cov)
    params = [n for n, _ in model.get_submodule(experts).named_parameters()]
    assert len(params) == 2
    for p in params:
        assert f"{experts} records its output and output gradient" in cov.whole[f"{experts}.{p}"]
    assert frame.loc[frame["layer"] == experts, "role"].iloc[0] == "other"
    assert value(frame, experts, "out.var") == pytest.approx(biased_var(seen[experts]["out"]), rel=1e-6)
    assert value(frame, experts, "grad_out.var") == pytest.approx(biased_var(seen[experts]["grad"]), rel=1e-6)


def test_t5_tied_shared_embedding_never_fires_and_the_warning_says_why():
    """T5's ``shared`` embedding is never called: ``encoder.embed_tokens`` and
    ``decoder.embed_tokens`` hold the same weight and are. The "never fired" warning names the
    layer it is tied to; fails while the warning gives only reasons that do not apply."""
    torch.manual_seed(0)
    cfg = transformers.T5Config(vocab_size=50, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
                                decoder_start_token_id=0, pad_token_id=0)
    model = transformers.T5ForConditionalGeneration(cfg).train()
    assert model.shared.weight is model.encoder.embed_tokens.weight
    x, y = torch.randint(0, 50, (2, 6)), torch.randint(0, 50, (2, 4))
    with pytest.warns(RuntimeWarning, match=r"never fired during training step 0: shared \(its weight is tied to "
                                            r"'encoder\.embed_tokens', which fired\)"):
        with varprobe.Probe(model, modes=("train",)) as probe:
            loss = model(input_ids=x, labels=y).loss
            loss.backward()
            probe.step(loss=loss)
    assert probe.coverage.complete, str(probe.coverage)  # T5LayerNorm: a norm

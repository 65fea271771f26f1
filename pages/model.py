"""Model: choose the base model (bundled, hub id, local folder or GGUF file), load it, and chat with it."""

import dataclasses

import streamlit as st

from dashboard.room import current_room
from dashboard.state import generating_model, model_for, require_app_shell, workspace
from dashboard.widgets import engine_errors, md
from rlhf_engine.config import DTYPE_CHOICES, QUANT_CHOICES, ModelConfig, field_help
from rlhf_engine.core.generation import decode_responses, sample_responses
from rlhf_engine.core.models import describe_model, model_facts

KINDS = {
    "Bundled SmolLM2-135M-Instruct (offline)": "default",
    "Hugging Face hub id": "hub",
    "Local folder": "folder",
    "GGUF file": "gguf",
}
PLACEHOLDERS = {"hub": "HuggingFaceTB/SmolLM2-135M-Instruct", "folder": "/path/to/model-folder",
                "gguf": "/path/to/model.gguf"}

require_app_shell()

ws = workspace()
current = ws.model_config()
help_text = field_help(ModelConfig)
st.title("Model")
st.caption("The base model every step starts from: the reward model's backbone, the PPO policy and its "
           "frozen reference. Hub ids need the model in your local Hugging Face cache (no network here).")

current_kind = "default" if current.source == "default" else (
    "gguf" if current.source.endswith(".gguf") else "folder" if current.source.startswith(("/", ".")) else "hub")
room = current_room()
with st.form("model-form"):
    if room is None:
        kind_label = st.radio("Source", list(KINDS), index=list(KINDS.values()).index(current_kind),
                              horizontal=True)
        kind = KINDS[kind_label]
        source = st.text_input("Hub id, folder or .gguf path (ignored for the bundled model)",
                               value="" if current.source == "default" else current.source,
                               placeholder=PLACEHOLDERS["hub"], help=help_text["source"])
    else:  # a path typed here would read the server's disk: the bundled model and the teacher's list only
        offered = ["default", *room.settings()["models"]]
        source = st.radio("Source (the models the teacher offers in this room)", offered,
                          index=offered.index(current.source) if current.source in offered else 0,
                          format_func=lambda s: "Bundled SmolLM2-135M-Instruct" if s == "default" else s)
        kind = "default" if source == "default" else "hub"
    col_q, col_d = st.columns(2)
    quant = col_q.selectbox("Quantization", QUANT_CHOICES, index=QUANT_CHOICES.index(current.quant),
                            help=help_text["quant"] + ". On CPU, 'none' generates faster; 4-bit saves memory.")
    dtype = col_d.selectbox("Compute dtype", DTYPE_CHOICES, index=DTYPE_CHOICES.index(current.dtype),
                            help=help_text["dtype"])
    submitted = st.form_submit_button("Load and use this model", type="primary")

if submitted:
    chosen_source = "default" if kind == "default" else source.strip()
    if room is not None and chosen_source not in ("default", *room.settings()["models"]):
        st.error("In a room, pick one of the models the teacher offers.")
    elif not chosen_source:
        st.error("Give a hub id, a folder or a .gguf path, or pick the bundled model.")
    else:
        with engine_errors("Loading the model"):
            config = dataclasses.replace(current, source=chosen_source, quant=quant, dtype=dtype)
            with st.spinner("Loading… (the bundled model is converted once, ~20 s, then loads in ~1 s)"):
                with generating_model(config):  # loaded now (in a room: the one copy every participant shares)
                    pass
            ws.save_model_config(config)
            current = config
            st.success(f"Using `{config.source}` ({config.quant}, {config.dtype}) for new runs.")

st.subheader("The model")
with engine_errors("Reading the model"):
    # From its files, without loading it (loading takes seconds; the chat below loads it when first used)
    facts = model_facts(current) or model_for(current)[2]
    described = describe_model(current)
    st.caption(md(described[:1].upper() + described[1:]))
    cols = st.columns(4)
    cols[0].metric("parameters", f"{facts['parameters'] / 1e6:.1f} M")
    cols[1].metric("weights in memory", f"{facts['memory_mib']:.0f} MiB")
    cols[2].metric("device", facts["device"])
    cols[3].metric("compute dtype", facts["dtype"])

    st.subheader("Try it")
    col_len, col_temp, col_clear = st.columns([2, 2, 1])
    max_new = col_len.slider("max new tokens", 8, 256, 64, help="Length cap of each answer")
    temperature = col_temp.slider("temperature", 0.1, 1.5, 0.7, help="Sampling temperature (PPO samples at 0.7)")
    if col_clear.button("Clear chat"):
        st.session_state.chat = []
    chat = st.session_state.setdefault("chat", [])
    for message in chat:
        with st.chat_message(message["role"]):
            st.text(message["content"])
    question = st.chat_input("Ask the model something")
    if question:
        chat.append({"role": "user", "content": question})
        with st.chat_message("user"):
            st.text(question)
        with st.chat_message("assistant"), st.spinner("Writing… (the first answer also loads the model)"):
            with generating_model(current) as (model, tokenizer):
                rollout = sample_responses(model, tokenizer, [tuple(chat)], max_new, temperature,
                                           current.chat_template)
            answer = decode_responses(tokenizer, rollout)[0]
            st.text(answer)
        chat.append({"role": "assistant", "content": answer})

"""Models: every registry model with its input contract and model card."""
import streamlit as st

from medseg_core.models import list_models
from medseg_core.review import model_card_summary
from pages._shared import require_frame

require_frame()

st.title("Models")
st.caption("Every model in the registry. Shipped checkpoints are demo versions trained on synthetic phantoms: "
           "research use only, not validated on patients.")
for name in list_models():
    s = model_card_summary(name)
    card = s["card"]
    status = {"ok": "checkpoint verified (SHA-256)", "missing": "no checkpoint shipped yet"}.get(s["checkpoint"], s["checkpoint"])
    with st.expander(f"{s['title']}  ·  {name}  ·  {status}", expanded=False):
        st.markdown(f"**Report** {s['report']} · **Task** {s['task']}  \n**Input** {s['contract']}  \n"
                    f"**Dropout** {s['dropout']}")
        if s["notes"]:
            st.caption(s["notes"])
        if card:
            c1, c2, c3 = st.columns(3)
            c1.metric("Parameters", f"{card.get('parameters', 0) / 1e6:.2f} M")
            test = card.get("test", {})
            if "dice" in test:
                c2.metric("Held-out Dice (synthetic)", f"{test['dice']:.3f}")
            if "auc" in test:
                c3.metric("Held-out AUC (synthetic)", f"{test['auc']:.3f}")
            if "dice_vs_both_ovaries" in test:
                c3.metric("Dice vs both ovaries", f"{test['dice_vs_both_ovaries']:.3f}")
            st.markdown(f"**Training data** {card.get('training_data', {}).get('adapter')} "
                        f"({card.get('training_data', {}).get('n_cases')} synthetic cases), "
                        f"split by patient; loss {card.get('loss', {}).get('name')}; "
                        f"{card.get('epochs_run')} epochs; input {card.get('input_size')}; "
                        f"variant {card.get('variant')}; storage {card.get('storage')}.")
            st.caption(card.get("notes", ""))
            st.caption(card.get("notice", ""))
            with st.popover("Full model card (JSON)"):
                st.json({k: v for k, v in card.items() if k != "split"})

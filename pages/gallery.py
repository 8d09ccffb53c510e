"""Failure gallery: filled by the failure-analysis work (issue 8, still open)."""
import streamlit as st
from pages._shared import require_frame

require_frame()

st.title("Failure gallery")
st.info("Not built yet: the failure-mode analysis (side swaps, double-ovary predictions, under- and "
        "over-segmentation, post-processing that helps or hurts) is planned work. Until then, use Segment & "
        "review with the reference mask and the TP / FP / FN colouring.")

"""RealityCheck dashboard: `streamlit run streamlit_app.py`.

Thin on purpose: the pages live in `realitycheck/serving/app/`, every computation in the `realitycheck` package.
"""

import streamlit as st

from realitycheck.serving import app

st.set_page_config(**app.PAGE_CONFIG)
page = st.navigation(app.pages())
app.init()
page.run()

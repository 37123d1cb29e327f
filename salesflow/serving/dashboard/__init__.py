"""The planners' dashboard (``salesflow dashboard``): a Streamlit script (:mod:`.app`) and
one small module per page. Pages only draw: the frames come from
:mod:`salesflow.serving.dashboard_data` and :mod:`salesflow.serving.queries`."""

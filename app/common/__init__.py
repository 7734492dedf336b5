"""Helpers several pages share: session state, background scans, the sidebar, cached loaders and chart styles."""

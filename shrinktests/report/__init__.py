"""Reports rendered from the run's summary data: the terminal table, summary.md, index.html
(with inline SVG plots) and data.json; the atlas's table, chart and files (``atlas``)."""

"""The bottom layer: what every other layer shares and nothing of the package's own below it.
The validator of typed tables (``schema``), the record of one greedy generation
(``generation``) and returning freed memory to the system (``heap``)."""

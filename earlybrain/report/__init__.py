"""QC reports: figures (figures.py), HTML assembly (html.py), subject and cohort pages."""

"""Reading and writing NIfTI, BIDS layouts and JSON sidecars."""

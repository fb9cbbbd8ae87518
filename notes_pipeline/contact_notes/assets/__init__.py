"""The four per-CID assets, from the CRM to the validation report."""

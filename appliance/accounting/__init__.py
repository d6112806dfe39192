"""Who may call and what they spent.

API keys, limits and budgets (in memory or in Redis), prices, the ledger and its
reports.
"""

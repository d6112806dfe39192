"""Workers that answer in the server process.

The OpenAI-compatible upstream proxy and the scripted backend.
"""

from appliance.backends.tls import import_aiohttp

import_aiohttp()  # before any module here imports it (see appliance.backends.tls)

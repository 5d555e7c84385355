"""The deployment's recommendation rules in Redis: one JSON document (service/rules.py says what
it holds), replaced as a whole with a version that only grows."""

from __future__ import annotations

import json

from ..keys import Keys
from .connection import translate_failures

# Replace the rules only if the stored version is the one the caller read (a lost update is
# refused, not silently overwritten), and give the new document the next version.
_REPLACE = """
local current = redis.call('GET', KEYS[1])
local version = 0
if current then
  version = cjson.decode(current)['version'] or 0
end
if tonumber(ARGV[2]) ~= version then
  return {0, version}
end
local rules = cjson.decode(ARGV[1])
rules['version'] = version + 1
redis.call('SET', KEYS[1], cjson.encode(rules))
return {1, version + 1}
"""


class RuleStore:
    def __init__(self, client, keys: Keys):
        self.client = client
        self.keys = keys
        self._replace = client.register_script(_REPLACE)

    @translate_failures
    def read(self) -> dict:
        """The stored rules ({"version": 0} when none were ever set)."""
        raw = self.client.get(self.keys.rules)
        if not raw:
            return {"version": 0}
        document = json.loads(raw)
        for name in ("blocklist", "boosts"):  # Lua's cjson writes an empty list as {}
            if document.get(name) == {}:
                document[name] = []
        return document

    @translate_failures
    def replace(self, rules: dict, expected_version: int) -> tuple[bool, int]:
        """(True, the new version), or (False, the stored version) when another change came first."""
        done, version = self._replace(keys=[self.keys.rules], args=[json.dumps(rules), expected_version])
        return bool(done), int(version)

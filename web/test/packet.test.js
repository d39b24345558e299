// The size check before publishing (MQTT 3.1.1 section 3.3: a PUBLISH packet's bytes).
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { publishPacketBytes } from '../src/packet.js';

test('a PUBLISH packet is its fixed header, topic, packet id and payload', () => {
  assert.equal(publishPacketBytes('a/b', 0, 0), 1 + 1 + 2 + 3); // remaining length 5: one byte
  assert.equal(publishPacketBytes('a/b', 10, 1), 1 + 1 + 2 + 3 + 2 + 10);
  assert.equal(publishPacketBytes('t', 200, 1), 1 + 2 + 2 + 1 + 2 + 200); // 205: two bytes
  assert.equal(publishPacketBytes('t', 2_097_152, 1), 1 + 4 + 2 + 1 + 2 + 2_097_152); // four
  assert.equal(publishPacketBytes('ü', 0, 0), 1 + 1 + 2 + 2); // UTF-8 bytes, not characters
});

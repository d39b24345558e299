// MQTT packet sizes, checked before publishing.

/** broker-config's ``max_packet_size`` (splitmq.transport.config.DEFAULT_MAX_PACKET_BYTES). */
export const DEFAULT_MAX_PACKET_BYTES = 8 * 1024 * 1024;

/** A publication the broker would refuse for its size: refused here, before sending. */
export class PayloadTooLarge extends Error {
  constructor(topic, sizeBytes, limitBytes) {
    super(`a ${sizeBytes}-byte packet on ${topic} is above the broker's limit of ${limitBytes} bytes`);
    this.name = 'PayloadTooLarge';
  }
}

/** The size of an MQTT 3.1.1 PUBLISH packet (section 3.3): fixed header, topic, id, payload. */
export function publishPacketBytes(topic, payloadBytes, qos) {
  const remaining = 2 + new TextEncoder().encode(topic).length + (qos > 0 ? 2 : 0) + payloadBytes;
  let header = 1;
  for (let left = remaining; ; left = Math.floor(left / 128)) {
    header += 1;
    if (left < 128) break;
  }
  return header + remaining;
}

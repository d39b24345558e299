// MQTT over WebSockets with MQTT.js: the agent's transport seam in a page.
//
// MQTT 3.1.1 (the baseline every splitmq broker speaks), WebSocket subprotocol "mqtt",
// the agent's will registered at connect (a retained "offline" status), reconnection
// with MQTT.js's own backoff. On every (re)connection the agent subscribes again and
// says it is online.

import mqtt from 'mqtt';

import { DEFAULT_MAX_PACKET_BYTES, PayloadTooLarge, publishPacketBytes } from './packet.js';

export function mqttTransport({ url, clientId, username = null, password = null, will, keepaliveS = 30, maxPacketBytes = DEFAULT_MAX_PACKET_BYTES }) {
  let client = null;
  let agent = null;
  const options = {
    clientId,
    protocolVersion: 4,
    clean: true,
    keepalive: keepaliveS,
    reconnectPeriod: 1000,
    connectTimeout: 10_000,
    will: { topic: will.topic, payload: will.payload, qos: will.qos, retain: will.retain },
  };
  if (username) options.username = username;
  if (password) options.password = password;

  return {
    /** Connect and hand every message and link change to ``target`` (the agent). */
    connect(target) {
      agent = target;
      return new Promise((resolve, reject) => {
        client = mqtt.connect(url, options);
        let first = true;
        client.on('connect', () => {
          if (first) {
            first = false;
            resolve();
          } else {
            agent.onConnection(true);
          }
        });
        client.on('close', () => {
          if (!first) agent.onConnection(false);
        });
        client.on('error', (error) => {
          if (first) {
            first = false;
            client.end(true);
            reject(error);
          }
        });
        client.on('message', (topic, payload, packet) => {
          const bytes = new Uint8Array(payload.buffer, payload.byteOffset, payload.byteLength);
          agent.onMessage(topic, bytes, packet.qos);
        });
      });
    },

    publish(topic, payload, { qos = 0, retain = false } = {}) {
      // A broker drops the connection of a client that sends past its limit, and the
      // client would resend the packet forever after reconnecting.
      const size = publishPacketBytes(topic, payload.length, qos);
      if (size > maxPacketBytes) return Promise.reject(new PayloadTooLarge(topic, size, maxPacketBytes));
      return new Promise((resolve, reject) => {
        client.publish(topic, payload, { qos, retain }, (error) => (error ? reject(error) : resolve()));
      });
    },

    subscribe(filter, qos) {
      return new Promise((resolve, reject) => {
        client.subscribe(filter, { qos }, (error, granted) => {
          if (error) reject(error);
          else if (granted?.some((g) => g.qos === 128)) reject(new Error(`the broker refused the subscription to ${filter}`));
          else resolve();
        });
      });
    },

    unsubscribe(filter) {
      return new Promise((resolve, reject) => {
        client.unsubscribe(filter, (error) => (error ? reject(error) : resolve()));
      });
    },

    /** Disconnect cleanly (no will) after what is queued is sent. */
    close() {
      return new Promise((resolve) => client.end(false, {}, resolve));
    },
  };
}

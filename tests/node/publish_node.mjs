// Publishes with the official Node GRIP library's Publisher (@fanoutio/grip), configured by a
// GRIP_URL as its README shows. Used by tests/e2e/node.rs and docs/clients.md.
//
//   GRIP_URL=http://127.0.0.1:5561/ node publish_node.mjs CHANNEL TEXT
//
// Publishes TEXT as an HTTP-stream chunk (with a newline), a WebSocket message and an
// HTTP response, in one item; prints `published`.
import { Publisher, Item, HttpStreamFormat, WebSocketMessageFormat, HttpResponseFormat } from '@fanoutio/grip';

const [channel, text] = process.argv.slice(2);
const publisher = new Publisher(process.env.GRIP_URL);
await publisher.publish(channel, new Item([
  new HttpStreamFormat(text + '\n'),
  new WebSocketMessageFormat(text),
  new HttpResponseFormat({ body: text + '\n' }),
]));
console.log('published');

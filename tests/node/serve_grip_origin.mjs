// A GRIP origin written the way the @fanoutio/serve-grip README shows it (Express, GRIP_URL,
// proxy required), used by tests/e2e/node.rs behind a default `gripmesh standalone`.
//
//   GRIP_URL=http://127.0.0.1:5561/ node serve_grip_origin.mjs
//
// Prints `listening <port>` once it accepts connections (PORT, default 0 = any free port).
//   GET /stream   stream hold on channel `test` (only when the request came through a GRIP
//                 proxy; serve-grip answers 501 otherwise)
//   POST /ws      WebSocket-over-HTTP: accept, subscribe `test`, echo every message
import express from 'express';
import { ServeGrip } from '@fanoutio/serve-grip';

const serveGrip = new ServeGrip({
  grip: process.env.GRIP_URL,
  gripProxyRequired: true,
});

const app = express();
app.use(serveGrip);

app.get('/stream', (req, res) => {
  const instruct = res.grip.startInstruct();
  instruct.addChannel('test');
  instruct.setHoldStream();
  res.end('[stream open]\n');
});

app.post('/ws', (req, res) => {
  const ws = req.grip.wsContext;
  if (ws == null) {
    res.statusCode = 400;
    res.end('[not a websocket-over-http request]\n');
    return;
  }
  if (ws.isOpening()) {
    ws.accept();
    ws.subscribe('test');
  }
  while (ws.canRecv()) {
    const message = ws.recv();
    if (message == null) {
      ws.close();
      break;
    }
    ws.send(message);
  }
  res.end();
});

const server = app.listen(Number(process.env.PORT || 0), '127.0.0.1', () => {
  console.log(`listening ${server.address().port}`);
});

// The Live webcam loop, run by the gr.HTML component of ferlab/ui/live.py (js_on_load: `element`
// is the component, `server.live_frame` the Python frame handler, `props.value` the controls' values
// as JSON: model, Grad-CAM overlay, opacity).  Each camera frame is drawn to a
// canvas, sent as a JPEG and the annotated JPEG that comes back replaces the last one shown.  Up to
// MAX_IN_FLIGHT frames travel at once, so the browser encodes and sends the next frame while the
// server works on the last one: the rate follows the server, not a round trip per frame.
const MAX_IN_FLIGHT = 3;
const MIN_GAP_MS = 1000 / 30;        // never faster than a 30 FPS camera
const MAX_FAILURES = 5;              // consecutive failed frames before the loop stops and says why
const video = element.querySelector(".live-camera");
const shown = element.querySelector("#live-output img");
const status = element.querySelector(".live-status");
const startButton = element.querySelector(".live-start");
const stopButton = element.querySelector(".live-stop");
const canvas = document.createElement("canvas");
let camera = null, stream = "", seq = 0, newest = 0, inFlight = 0, failures = 0, due = 0;
let counted = [], pending = null;

function say(text) { status.textContent = text; }

function stop(message) {
  if (camera) camera.getTracks().forEach((track) => track.stop());
  camera = null;
  stream = "";          // answers still in flight belong to the stopped stream: they are dropped
  clearTimeout(pending);
  pending = null;
  startButton.disabled = false;
  stopButton.disabled = true;
  say(message || "Stopped.");
}

function pump() {
  if (!camera || inFlight >= MAX_IN_FLIGHT || pending) return;
  const now = performance.now();
  if (now < due) { pending = setTimeout(() => { pending = null; pump(); }, due - now); return; }
  // no camera picture yet, or the tab is out of view (another tab picked): wait, send nothing
  if (!video.videoWidth || element.offsetParent === null) {
    pending = setTimeout(() => { pending = null; pump(); }, 100);
    return;
  }
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext("2d").drawImage(video, 0, 0);
  const settings = JSON.parse(props.value || "{}");
  const frame = {...settings, stream: stream, seq: ++seq, image: canvas.toDataURL("image/jpeg", 0.8)};
  // the next frame is due one camera frame later, counted from when this one was due: a timer that
  // fires late (they do, by 5-10 ms on a busy machine) does not slow the rate; after a stall (all
  // frames in flight) the next one waits half a frame, not a burst of catch-up frames
  due = Math.max(due + MIN_GAP_MS, now + MIN_GAP_MS / 2);
  inFlight += 1;
  server.live_frame(frame).then((answer) => {
    failures = 0;
    if (answer && answer.error) {        // the server read the frame and refused it: say why, once
      if (camera) stop(`Stopped: ${answer.error}.`);
      return;
    }
    if (answer && answer.image && answer.seq > newest && answer.stream === stream) {
      newest = answer.seq;
      shown.src = answer.image;
      const now = performance.now();
      counted = counted.filter((t) => now - t < 2000);
      counted.push(now);
      say(`${(counted.length / 2).toFixed(1)} frames per second, analysed on the server`);
    }
  }).catch((error) => {
    failures += 1;
    if (failures >= MAX_FAILURES && camera) stop(`Stopped: the server did not answer (${error.message || error}).`);
  }).finally(() => { inFlight -= 1; pump(); });
  pump();
}

startButton.addEventListener("click", async () => {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    say("This page cannot reach a camera: browsers allow webcams only on https:// or on localhost.");
    return;
  }
  startButton.disabled = true;
  say("Asking for the camera...");
  try {
    camera = await navigator.mediaDevices.getUserMedia({video: {width: 640, height: 480}, audio: false});
  } catch (error) {
    stop(`No camera: ${error.message || error.name}. Allow camera access for this page and try again.`);
    return;
  }
  video.srcObject = camera;
  await video.play();
  stream = Math.random().toString(36).slice(2);
  seq = 0; newest = 0; failures = 0; counted = []; due = 0;
  stopButton.disabled = false;
  say("Streaming...");
  pump();
});
stopButton.addEventListener("click", () => stop());

/**
 * The camera through getUserMedia (back camera, chosen resolution). Where the browser hands out the frames
 * themselves (WebCodecs `VideoFrame`s from `MediaStreamTrackProcessor`: Chromium, also on Android), each frame's own
 * YUV planes are copied out and converted in code by the rule the Python agent uses (`yuv.ts`), so both devices
 * make the same pixels of the same frame; the browser's own YUV->RGB differs from FFmpeg's by a grey level here and
 * there. Elsewhere (no processor, or a frame that is not 8-bit 4:2:0 BT.601/709) the frame is drawn 1:1 on a
 * canvas (no scaling, so no smoothing) and the browser converts it. `path` says which one ran; preprocess.ts does
 * the rest in code. A stream that stops (the track ends or is muted, the frame stream ends) is reported, never
 * silently: keepalive.ts shows it and starts the camera again.
 */

import { type Raster } from "./preprocess.js";
import { ruleOf, yuvToRgba } from "./yuv.js";

export interface CameraOptions {
  width: number;
  height: number;
}

/** Chromium's MediaStreamTrackProcessor (not in TypeScript's DOM library): a track's frames as a stream. */
interface TrackProcessor {
  readable: ReadableStream<VideoFrame>;
}
type TrackProcessorClass = new (init: { track: MediaStreamTrack }) => TrackProcessor;

/** What a running camera reports. */
export interface CameraEvents {
  frame(frame: Raster, presented: number): void;
  /** Frames stopped for good, and why (the track ended, the frame stream ended): only a new stream brings more. */
  ended(why: string): void;
  /** The track was muted (the system or another app holds the camera: no frames until unmuted), or unmuted. */
  muted(muted: boolean): void;
}

export class Camera {
  private readonly canvas = document.createElement("canvas");
  private readonly context: CanvasRenderingContext2D;
  private stream: MediaStream | null = null;
  /** The stream's number: events and frame loops of an earlier stream (stopped, or replaced by `start`) are
   * ignored. */
  private generation = 0;
  /** How the last frame became RGBA: "planes I420 bt601 limited", or "canvas (why)". */
  path = "none";

  /** `canvasOnly`: let the browser convert every frame (`?capture=canvas`, to compare the two paths). */
  constructor(private readonly video: HTMLVideoElement, private readonly canvasOnly = false) {
    const context = this.canvas.getContext("2d", { willReadFrequently: true });
    if (context === null) throw new Error("no 2D canvas");
    this.context = context;
  }

  /** Opens the camera (again: the earlier stream is stopped first). */
  async start(options: CameraOptions): Promise<void> {
    this.stop();
    this.stream = await navigator.mediaDevices.getUserMedia({
      audio: false,
      video: { facingMode: { ideal: "environment" }, width: { ideal: options.width }, height: { ideal: options.height } },
    });
    this.video.srcObject = this.stream;
    this.video.muted = true;
    await this.video.play();
  }

  /** Reports each frame of the stream `start` opened (its RGBA pixels and a frame counter), and its end. */
  each(events: CameraEvents): void {
    const generation = this.generation;
    const live = () => generation === this.generation;
    const track = this.stream?.getVideoTracks()[0];
    if (track === undefined) {
      events.ended("the camera gave no video track");
      return;
    }
    // a track ends when the camera is unplugged, taken back (permissions) or stopped; the page's own stop (a
    // restart) is no news, hence `live`
    track.addEventListener("ended", () => live() && events.ended("the camera track ended"));
    track.addEventListener("mute", () => live() && events.muted(true));
    track.addEventListener("unmute", () => live() && events.muted(false));
    if (track.readyState === "ended") {
      events.ended("the camera track ended");
      return;
    }
    const Processor = (globalThis as { MediaStreamTrackProcessor?: TrackProcessorClass }).MediaStreamTrackProcessor;
    if (Processor !== undefined && !this.canvasOnly) {
      // a stream that fails while the track lives (the processor refuses it) leaves the frames to the canvas
      void this.readFrames(new Processor({ track }).readable.getReader(), events, live).catch((error) => {
        if (!live()) return;
        if (track.readyState === "ended") events.ended(`the camera track ended (${describe(error)})`);
        else this.canvasFrames(events, live, `canvas (frame stream failed: ${describe(error)})`);
      });
      return;
    }
    this.canvasFrames(events, live, this.canvasOnly ? "canvas (asked)" : "canvas (no MediaStreamTrackProcessor)");
  }

  private canvasFrames(events: CameraEvents, live: () => boolean, why: string): void {
    this.path = why;
    // a video fed by a stream whose tracks all ended fires `ended` (and calls back no more)
    this.video.addEventListener("ended", () => live() && events.ended("the camera stream ended"), { once: true });
    const tick = (_now: number, meta: VideoFrameCallbackMetadata) => {
      if (!live()) return;
      events.frame(this.grab(this.video, this.video.videoWidth, this.video.videoHeight), meta.presentedFrames);
      this.video.requestVideoFrameCallback(tick);
    };
    this.video.requestVideoFrameCallback(tick);
  }

  /** Every frame of the track, converted and released at once (a held frame starves the camera's pool), until the
   * stream ends (reported: it once returned silently, the page still saying "streaming") or is replaced. */
  private async readFrames(reader: ReadableStreamDefaultReader<VideoFrame>, events: CameraEvents,
    live: () => boolean): Promise<void> {
    for (let n = 1; ; n++) {
      const { value: frame, done } = await reader.read();
      if (!live()) {
        frame?.close();
        void reader.cancel().catch(() => undefined);
        return;
      }
      if (done) {
        events.ended("the camera's frame stream ended");
        return;
      }
      let raster: Raster;
      try {
        raster = await this.fromFrame(frame);
      } finally {
        frame.close();
      }
      events.frame(raster, n);
    }
  }

  private async fromFrame(frame: VideoFrame): Promise<Raster> {
    const format = frame.format;
    const matrix = ruleOf(frame.colorSpace.matrix);
    const rect = frame.visibleRect;
    if ((format === "I420" || format === "NV12") && matrix !== null && rect !== null) {
      try {
        const data = new Uint8Array(frame.allocationSize());
        const layout = await frame.copyTo(data);
        const fullRange = frame.colorSpace.fullRange === true;
        const rgba = yuvToRgba({ format, width: rect.width, height: rect.height, data, layout, matrix, fullRange });
        this.path = `planes ${format} ${matrix} ${fullRange ? "full" : "limited"}`;
        return rgba;
      } catch (error) {
        this.path = `canvas (planes failed: ${error instanceof Error ? error.message : error})`;
        return this.grab(frame, frame.displayWidth, frame.displayHeight);
      }
    }
    this.path = `canvas (${format} ${frame.colorSpace.matrix ?? "unspecified"})`;
    return this.grab(frame, frame.displayWidth, frame.displayHeight);
  }

  private grab(source: CanvasImageSource, width: number, height: number): Raster {
    if (this.canvas.width !== width || this.canvas.height !== height) {
      this.canvas.width = width;
      this.canvas.height = height;
    }
    this.context.imageSmoothingEnabled = false;
    this.context.drawImage(source, 0, 0, width, height);
    const pixels = this.context.getImageData(0, 0, width, height);
    return { width, height, channels: 4, data: new Uint8Array(pixels.data.buffer) };
  }

  /** Stops the stream; its events and frame loop end with it. */
  stop(): void {
    this.generation += 1;
    this.stream?.getTracks().forEach((track) => track.stop());
    this.stream = null;
    this.video.srcObject = null;
  }
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

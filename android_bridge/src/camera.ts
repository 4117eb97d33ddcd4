/**
 * The camera through getUserMedia (back camera, chosen resolution). Where the browser hands out the frames
 * themselves (WebCodecs `VideoFrame`s from `MediaStreamTrackProcessor`: Chromium, also on Android), each frame's own
 * YUV planes are copied out and converted in code by the rule the Python agent uses (`yuv.ts`), so both devices
 * make the same pixels of the same frame; the browser's own YUV->RGB differs from FFmpeg's by a grey level here and
 * there. Elsewhere (no processor, or a frame that is not 8-bit 4:2:0 BT.601/709) the frame is drawn 1:1 on a
 * canvas (no scaling, so no smoothing) and the browser converts it. `path` says which one ran; preprocess.ts does
 * the rest in code.
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

export class Camera {
  private readonly canvas = document.createElement("canvas");
  private readonly context: CanvasRenderingContext2D;
  private stream: MediaStream | null = null;
  /** How the last frame became RGBA: "planes I420 bt601 limited", or "canvas (why)". */
  path = "none";

  /** `canvasOnly`: let the browser convert every frame (`?capture=canvas`, to compare the two paths). */
  constructor(private readonly video: HTMLVideoElement, private readonly canvasOnly = false) {
    const context = this.canvas.getContext("2d", { willReadFrequently: true });
    if (context === null) throw new Error("no 2D canvas");
    this.context = context;
  }

  async start(options: CameraOptions): Promise<void> {
    this.stream = await navigator.mediaDevices.getUserMedia({
      audio: false,
      video: { facingMode: { ideal: "environment" }, width: { ideal: options.width }, height: { ideal: options.height } },
    });
    this.video.srcObject = this.stream;
    this.video.muted = true;
    await this.video.play();
  }

  /** Calls `onFrame` once per camera frame with its RGBA pixels and a frame counter. */
  each(onFrame: (frame: Raster, presented: number) => void): void {
    const Processor = (globalThis as { MediaStreamTrackProcessor?: TrackProcessorClass }).MediaStreamTrackProcessor;
    const track = this.stream?.getVideoTracks()[0];
    if (Processor !== undefined && track !== undefined && !this.canvasOnly) {
      // a stream that fails (the processor refuses the track) leaves the frames to the canvas
      void this.readFrames(new Processor({ track }).readable.getReader(), onFrame).catch((error) => {
        this.canvasFrames(onFrame, `canvas (frame stream failed: ${error instanceof Error ? error.message : error})`);
      });
      return;
    }
    this.canvasFrames(onFrame, this.canvasOnly ? "canvas (asked)" : "canvas (no MediaStreamTrackProcessor)");
  }

  private canvasFrames(onFrame: (frame: Raster, presented: number) => void, why: string): void {
    this.path = why;
    const tick = (_now: number, meta: VideoFrameCallbackMetadata) => {
      onFrame(this.grab(this.video, this.video.videoWidth, this.video.videoHeight), meta.presentedFrames);
      this.video.requestVideoFrameCallback(tick);
    };
    this.video.requestVideoFrameCallback(tick);
  }

  /** Every frame of the track, converted and released at once (a held frame starves the camera's pool). */
  private async readFrames(reader: ReadableStreamDefaultReader<VideoFrame>,
    onFrame: (frame: Raster, presented: number) => void): Promise<void> {
    for (let n = 1; ; n++) {
      const { value: frame, done } = await reader.read();
      if (done) return;
      let raster: Raster;
      try {
        raster = await this.fromFrame(frame);
      } finally {
        frame.close();
      }
      onFrame(raster, n);
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

  stop(): void {
    this.stream?.getTracks().forEach((track) => track.stop());
  }
}

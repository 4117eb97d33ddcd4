/**
 * The camera through getUserMedia (back camera, chosen resolution). Each presented video frame is copied 1:1
 * (no scaling, so no smoothing) into RGBA bytes; preprocess.ts does the rest in code.
 */

import { type Raster } from "./preprocess.js";

export interface CameraOptions {
  width: number;
  height: number;
}

export class Camera {
  private readonly canvas = document.createElement("canvas");
  private readonly context: CanvasRenderingContext2D;
  private stream: MediaStream | null = null;

  constructor(private readonly video: HTMLVideoElement) {
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

  /** Calls `onFrame` once per presented frame with its RGBA pixels and the compositor's frame counter. */
  each(onFrame: (frame: Raster, presented: number) => void): void {
    const tick = (_now: number, meta: VideoFrameCallbackMetadata) => {
      onFrame(this.grab(), meta.presentedFrames);
      this.video.requestVideoFrameCallback(tick);
    };
    this.video.requestVideoFrameCallback(tick);
  }

  grab(): Raster {
    const width = this.video.videoWidth;
    const height = this.video.videoHeight;
    if (this.canvas.width !== width || this.canvas.height !== height) {
      this.canvas.width = width;
      this.canvas.height = height;
    }
    this.context.imageSmoothingEnabled = false;
    this.context.drawImage(this.video, 0, 0, width, height);
    const pixels = this.context.getImageData(0, 0, width, height);
    return { width, height, channels: 4, data: new Uint8Array(pixels.data.buffer) };
  }

  stop(): void {
    this.stream?.getTracks().forEach((track) => track.stop());
  }
}

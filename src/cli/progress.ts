/**
 * A one-line progress bar on stderr for long work (only when stderr is a terminal; silent otherwise so logs and
 * pipes stay clean): items done, throughput, ETA and a caller-supplied detail such as the running ratio.
 */
export interface ProgressOptions {
  /** What is counted, for the rate ("MB/s", "params/s"). */
  unit: string;
  /** Divides the raw count for display (1e6 for MB/s). */
  unitScale?: number;
  stream?: NodeJS.WriteStream;
}

export class Progress {
  private readonly started = performance.now();
  private lastDraw = 0;
  private readonly stream: NodeJS.WriteStream;
  private readonly enabled: boolean;

  constructor(
    private readonly label: string,
    private readonly total: number,
    private readonly options: ProgressOptions,
  ) {
    this.stream = options.stream ?? process.stderr;
    this.enabled = this.stream.isTTY === true;
  }

  /** Redraws at most ten times a second. */
  update(done: number, detail = ''): void {
    if (!this.enabled) return;
    const now = performance.now();
    if (now - this.lastDraw < 100 && done < this.total) return;
    this.lastDraw = now;
    const seconds = (now - this.started) / 1000;
    const fraction = this.total > 0 ? Math.min(1, done / this.total) : 1;
    const width = 24;
    const filled = Math.round(fraction * width);
    const rate = seconds > 0 ? done / seconds / (this.options.unitScale ?? 1) : 0;
    const eta = fraction > 0 && fraction < 1 ? seconds * (1 / fraction - 1) : 0;
    const line = `${this.label} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${(fraction * 100).toFixed(0).padStart(3)}% `
      + `${rate.toFixed(1)} ${this.options.unit}` + (eta > 0 ? ` ETA ${formatSeconds(eta)}` : '') + (detail ? ` ${detail}` : '');
    this.stream.write(`\r${line.slice(0, (this.stream.columns ?? 120) - 1)}\x1b[K`);
  }

  done(): void {
    if (this.enabled) this.stream.write('\r\x1b[K');
  }
}

export function formatSeconds(seconds: number): string {
  if (seconds < 60) return `${seconds.toFixed(1)}s`;
  const minutes = Math.floor(seconds / 60);
  return `${minutes}m${Math.round(seconds % 60).toString().padStart(2, '0')}s`;
}

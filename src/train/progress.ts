/** h:mm:ss, as LLaMA-Factory's trainer_log.jsonl writes times. */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return `${h}:${String(m).padStart(2, '0')}:${String(s % 60).padStart(2, '0')}`;
}

export interface StepReport {
  step: number;
  totalSteps: number;
  loss: number;
  lr: number;
  epoch: number;
  tokensPerSecond: number;
  elapsedSeconds: number;
  gradNorm: number;
}

/** The progress line printed at each logging step. */
export function progressLine(r: StepReport): string {
  const remaining = (r.elapsedSeconds / Math.max(1, r.step)) * (r.totalSteps - r.step);
  return [
    `step ${r.step}/${r.totalSteps}`,
    `loss ${r.loss.toFixed(4)}`,
    `lr ${r.lr.toExponential(2)}`,
    `grad_norm ${r.gradNorm.toFixed(3)}`,
    `epoch ${r.epoch.toFixed(2)}`,
    `${r.tokensPerSecond.toFixed(0)} tokens/s`,
    `elapsed ${formatDuration(r.elapsedSeconds)}`,
    `left ${formatDuration(remaining)}`,
  ].join(' | ');
}

/**
 * One checkpoint conversion in its own process, for `npm run bench -- --scale`: runs sparsellm's converter
 * (convertCheckpoint) and prints one JSON line {report, maxRssKb, cpuSeconds} on stdout (maxRssKb =
 * process.resourceUsage().maxRSS, the peak resident set of this process).
 *   node --import tsx bench/child-convert.ts <checkpoint folder> <output folder>
 */
import { convertCheckpoint } from '../src/convert/convert.js';

const [source, out] = process.argv.slice(2);
const report = convertCheckpoint(source!, out!, { force: true });
const cpu = process.cpuUsage();
process.stdout.write(`${JSON.stringify({ report, maxRssKb: process.resourceUsage().maxRSS, cpuSeconds: (cpu.user + cpu.system) / 1e6 })}\n`);

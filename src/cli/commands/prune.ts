import type { CommandModule } from 'yargs';
import { UserError } from '../../errors.js';

export const pruneCommand: CommandModule = {
  command: 'prune',
  describe: 'Prune a model with magnitude, Wanda, SparseGPT or SparseLLM and export it as ONNX',
  handler: () => {
    throw new UserError('`prune` is not yet available in this build', 3);
  },
};

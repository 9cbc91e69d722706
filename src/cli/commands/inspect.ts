import type { CommandModule } from 'yargs';
import { UserError } from '../../errors.js';

export const inspectCommand: CommandModule = {
  command: 'inspect',
  describe: 'Blocks, linear layers, shapes and sparsity of an ONNX model',
  handler: () => {
    throw new UserError('`inspect` is not yet available in this build', 3);
  },
};

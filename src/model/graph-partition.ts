// Splits a decoder graph into a prologue (embeddings, masks, rotary tables), one part per decoder
// block and an epilogue (final norm, lm_head).
//
// Rules: a node belongs to block i when its name has the scope `layers.<i>/` (i < numBlocks);
// other nodes belong to the prologue unless they are downstream of a block node (then epilogue).
// "Constant-like" nodes (whose inputs are all initializers / constants: Constant, Identity of a
// shared weight, ...) belong to no part: each part that needs one gets its own copy. Tensors that
// cross a part boundary become that part's inputs/outputs; unused graph outputs (present.*) are dropped.
import type { NodeProto } from 'onnx-buf';
import { blockOfNodeName } from './decoder-layout.js';
import type { OnnxModel } from './onnx-file.js';

export interface GraphPart {
  /** 'prologue', 'block 3', 'epilogue'. */
  label: string;
  /** Index in run order: -1 prologue, 0..n-1 blocks, n epilogue. */
  order: number;
  /** Nodes to run (constant-like nodes copied in), in the original topological order. */
  nodes: NodeProto[];
  /** Initializers the nodes read. */
  initializers: string[];
  /** Tensors this part reads from the running state (graph inputs or earlier parts' outputs). */
  inputs: string[];
  /** Tensors later parts need (for the epilogue: the logits). */
  outputs: string[];
}

export interface GraphPartition {
  prologue: GraphPart;
  blocks: GraphPart[];
  epilogue: GraphPart;
  /** For each tensor crossing a boundary: the order of the last part that reads it. */
  lastUse: Map<string, number>;
  logitsName: string;
}

export function partitionGraph(model: OnnxModel, numBlocks: number): GraphPartition {
  const graph = model.graph;
  const isInit = (t: string) => model.hasInitializer(t);
  const producer = new Map<string, NodeProto>();
  for (const n of graph.node) for (const o of n.output) if (o) producer.set(o, n);

  // Constant-like nodes, found in topological order.
  const constLike = new Set<NodeProto>();
  for (const n of graph.node) {
    const ins = n.input.filter(Boolean);
    if (ins.every((t) => isInit(t) || constLike.has(producer.get(t)!))) constLike.add(n);
  }

  // Owner part of every other node.
  const epilogueOrder = numBlocks;
  const owner = new Map<NodeProto, number>();
  for (const n of graph.node) {
    if (constLike.has(n)) continue;
    const b = blockOfNodeName(n.name);
    if (b !== null && b < numBlocks) {
      owner.set(n, b);
      continue;
    }
    const downstreamOfBlock = n.input.some((t) => {
      const p = producer.get(t);
      return p !== undefined && (owner.get(p) ?? -1) >= 0;
    });
    owner.set(n, downstreamOfBlock ? epilogueOrder : -1);
  }

  const logitsName = graph.output.find((o) => o.name === 'logits')?.name ?? graph.output[0]!.name;
  const orders = [-1, ...Array.from({ length: numBlocks }, (_, i) => i), epilogueOrder];
  const parts = new Map<number, GraphPart>();
  const lastUse = new Map<string, number>();

  for (const order of orders) {
    const own = graph.node.filter((n) => owner.get(n) === order);
    const produced = new Set(own.flatMap((n) => n.output));
    const copied = new Set<NodeProto>();
    const inputs = new Set<string>();
    const initializers = new Set<string>();
    const need = (t: string): void => {
      if (!t || produced.has(t)) return;
      if (isInit(t)) return void initializers.add(t);
      const p = producer.get(t);
      if (p && constLike.has(p)) {
        if (!copied.has(p)) {
          copied.add(p);
          p.input.forEach(need);
        }
        return;
      }
      const from = p ? owner.get(p)! : -1; // graph inputs count as available from the start
      if (from >= order && p) throw new Error(`graph split: ${labelOf(order, numBlocks)} reads ${t} from a later part (${p.name}); unsupported layout`);
      inputs.add(t);
      lastUse.set(t, Math.max(lastUse.get(t) ?? -1, order));
    };
    for (const n of own) {
      n.input.forEach(need);
      subgraphInputs(n).forEach(need);
    }
    const nodes = graph.node.filter((n) => copied.has(n) || owner.get(n) === order);
    parts.set(order, { label: labelOf(order, numBlocks), order, nodes, initializers: [...initializers], inputs: [...inputs], outputs: [] });
  }

  // Outputs: produced tensors that a later part reads (+ logits for the epilogue).
  for (const [tensor] of lastUse) {
    const p = producer.get(tensor);
    if (p && !constLike.has(p)) parts.get(owner.get(p)!)!.outputs.push(tensor);
  }
  parts.get(epilogueOrder)!.outputs.push(logitsName);
  if (!parts.get(epilogueOrder)!.nodes.some((n) => n.output.includes(logitsName))) {
    throw new Error(`graph split: ${logitsName} is not computed after the last decoder block; unsupported layout`);
  }
  return {
    prologue: parts.get(-1)!,
    blocks: orders.slice(1, -1).map((o) => parts.get(o)!),
    epilogue: parts.get(epilogueOrder)!,
    lastUse,
    logitsName,
  };
}

function labelOf(order: number, numBlocks: number): string {
  return order < 0 ? 'prologue' : order >= numBlocks ? 'epilogue' : `block ${order}`;
}

/** Outer-scope tensors read by a node's subgraph attributes (If/Loop/Scan bodies). */
function subgraphInputs(n: NodeProto): string[] {
  const names: string[] = [];
  for (const a of n.attribute) {
    for (const g of [a.g, ...a.graphs]) {
      if (!g) continue;
      const local = new Set([...g.input.map((i) => i.name), ...g.initializer.map((i) => i.name), ...g.node.flatMap((x) => x.output)]);
      for (const x of g.node) for (const t of [...x.input, ...subgraphInputs(x)]) if (t && !local.has(t)) names.push(t);
    }
  }
  return names;
}

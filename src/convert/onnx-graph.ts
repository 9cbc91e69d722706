// A small ONNX graph writer for the per-family builders (builders/opt.ts, builders/llama.ts): nodes named with
// module scopes as torch.onnx / optimum name them (`/model/layers.0/self_attn/q_proj/MatMul`), small constants as
// inline initializers, and weights streamed one tensor at a time into an external data file beside the model.
import { closeSync, openSync, writeFileSync, writeSync } from 'node:fs';
import { create, toBinary } from '@bufbuild/protobuf';
import {
  AttributeProtoSchema, AttributeProto_AttributeType, GraphProtoSchema, ModelProtoSchema, NodeProtoSchema, OperatorSetIdProtoSchema,
  StringStringEntryProtoSchema, TensorProtoSchema, TensorProto_DataLocation, TensorProto_DataType, TensorShapeProto_DimensionSchema,
  ValueInfoProtoSchema, type AttributeProto, type NodeProto, type TensorProto, type ValueInfoProto,
} from 'onnx-buf';
import { float32ToHalfArray } from '../model/float16.js';

export const DT = TensorProto_DataType;
/** Opset 17: LayerNormalization is standard; ReduceMean still takes `axes` as an attribute. */
export const OPSET = 17;

export type OutputDtype = 'fp32' | 'fp16';
export type Attr = number | number[] | string | { tensor: TensorProto };

export class GraphBuilder {
  readonly nodes: NodeProto[] = [];
  readonly initializers: TensorProto[] = [];
  readonly inputs: ValueInfoProto[] = [];
  readonly outputs: ValueInfoProto[] = [];
  private readonly used = new Set<string>();
  private fd: number | undefined;
  private offset = 0;

  /** @param dataPath external data file (created on the first weight); @param dataLocation its name relative to the model. */
  constructor(private readonly dataPath: string, private readonly dataLocation: string, readonly dtype: OutputDtype) {}

  /** ONNX elem type of the model's float tensors. */
  get floatType(): number {
    return this.dtype === 'fp16' ? DT.FLOAT16 : DT.FLOAT;
  }

  /** Add node `name` (a unique scoped name); returns its outputs, named `<name>_output_<k>` as torch.onnx does. */
  op(opType: string, name: string, inputs: string[], attrs: Record<string, Attr> = {}, outputs = 1): string[] {
    if (this.used.has(name)) throw new Error(`graph builder: duplicate node name ${name}`);
    this.used.add(name);
    const output = Array.from({ length: outputs }, (_, k) => `${name}_output_${k}`);
    this.nodes.push(create(NodeProtoSchema, { opType, name, input: inputs, output, attribute: Object.entries(attrs).map(([k, v]) => attribute(k, v)) }));
    return output;
  }

  /** One-output op. */
  op1(opType: string, name: string, inputs: string[], attrs: Record<string, Attr> = {}): string {
    return this.op(opType, name, inputs, attrs)[0]!;
  }

  /** A node whose single output has a given name (graph outputs such as present.0.key, logits). */
  opNamed(opType: string, name: string, inputs: string[], output: string, attrs: Record<string, Attr> = {}): string {
    this.used.add(name);
    this.nodes.push(create(NodeProtoSchema, { opType, name, input: inputs, output: [output], attribute: Object.entries(attrs).map(([k, v]) => attribute(k, v)) }));
    return output;
  }

  /** An inline int64 constant initializer. */
  int64(name: string, values: number[], dims: number[] = [values.length]): string {
    const data = BigInt64Array.from(values.map((v) => BigInt(v)));
    this.initializers.push(create(TensorProtoSchema, { name, dims: dims.map(BigInt), dataType: DT.INT64, rawData: bytesOf(data) }));
    return name;
  }

  /** An inline float constant initializer, float32 unless `type` says otherwise (scalar when dims = []). */
  float(name: string, values: number[] | Float32Array, dims: number[] = [], type: number = DT.FLOAT): string {
    const f32 = Float32Array.from(values);
    const data = type === DT.FLOAT16 ? float32ToHalfArray(f32) : f32;
    this.initializers.push(create(TensorProtoSchema, { name, dims: dims.map(BigInt), dataType: type, rawData: bytesOf(data) }));
    return name;
  }

  /** A weight in the model's dtype, written now to the external data file (64-byte aligned offsets). */
  weight(name: string, dims: number[], values: Float32Array): string {
    const data = this.dtype === 'fp16' ? float32ToHalfArray(values) : values;
    const bytes = bytesOf(data);
    this.fd ??= openSync(this.dataPath, 'w');
    this.offset = Math.ceil(this.offset / 64) * 64;
    let done = 0;
    while (done < bytes.byteLength) done += writeSync(this.fd, bytes, done, Math.min(bytes.byteLength - done, 1 << 30), this.offset + done);
    this.initializers.push(create(TensorProtoSchema, {
      name, dims: dims.map(BigInt), dataType: this.floatType, dataLocation: TensorProto_DataLocation.EXTERNAL,
      externalData: [
        create(StringStringEntryProtoSchema, { key: 'location', value: this.dataLocation }),
        create(StringStringEntryProtoSchema, { key: 'offset', value: String(this.offset) }),
        create(StringStringEntryProtoSchema, { key: 'length', value: String(bytes.byteLength) }),
      ],
    }));
    this.offset += bytes.byteLength;
    return name;
  }

  /** Declare a graph input / output; dims are numbers or symbolic names. */
  input(name: string, elemType: number, dims: (number | string)[]): string {
    this.inputs.push(valueInfo(name, elemType, dims));
    return name;
  }

  output(name: string, elemType: number, dims: (number | string)[]): void {
    this.outputs.push(valueInfo(name, elemType, dims));
  }

  /** Close the data file and write the model protobuf. */
  save(modelPath: string, graphName: string): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
    const graph = create(GraphProtoSchema, { name: graphName, node: this.nodes, initializer: this.initializers, input: this.inputs, output: this.outputs });
    const model = create(ModelProtoSchema, {
      irVersion: 8n,
      producerName: 'sparsellm',
      opsetImport: [create(OperatorSetIdProtoSchema, { domain: '', version: BigInt(OPSET) })],
      graph,
    });
    writeFileSync(modelPath, toBinary(ModelProtoSchema, model));
  }

  /** Close the data file without writing a model (on failure). */
  abort(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }
}

function bytesOf(a: ArrayBufferView): Uint8Array<ArrayBuffer> {
  return new Uint8Array(a.buffer as ArrayBuffer, a.byteOffset, a.byteLength);
}

function attribute(name: string, v: Attr): AttributeProto {
  const T = AttributeProto_AttributeType;
  if (typeof v === 'number') {
    return Number.isInteger(v) && !Object.is(v, -0) && !['epsilon', 'alpha', 'beta'].includes(name)
      ? create(AttributeProtoSchema, { name, type: T.INT, i: BigInt(v) })
      : create(AttributeProtoSchema, { name, type: T.FLOAT, f: v });
  }
  if (typeof v === 'string') return create(AttributeProtoSchema, { name, type: T.STRING, s: new TextEncoder().encode(v) });
  if (Array.isArray(v)) return create(AttributeProtoSchema, { name, type: T.INTS, ints: v.map(BigInt) });
  return create(AttributeProtoSchema, { name, type: T.TENSOR, t: v.tensor });
}

function valueInfo(name: string, elemType: number, dims: (number | string)[]): ValueInfoProto {
  const dim = dims.map((d) => create(TensorShapeProto_DimensionSchema, { value: typeof d === 'number' ? { case: 'dimValue', value: BigInt(d) } : { case: 'dimParam', value: d } }));
  return create(ValueInfoProtoSchema, { name, type: { value: { case: 'tensorType', value: { elemType, shape: { dim } } } } });
}

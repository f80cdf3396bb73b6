"""The papers the zoo table (zamzoo.models._zoo) cites for its backbones and attentions: id, title, link, BibTeX.

`id` is what a pretrained cfg lists in `paper_ids` (None for ZAM: a GitHub repository, no paper)."""
from typing import NamedTuple, Optional


class Paper(NamedTuple):
    id: Optional[str]
    title: str
    url: str
    bibtex: str


RESNET = Paper(
    id='arXiv:1512.03385', url='https://arxiv.org/abs/1512.03385', title='Deep Residual Learning for Image Recognition',
    bibtex='@inproceedings{he2016deep,\n'
           '  title={Deep Residual Learning for Image Recognition},\n'
           '  author={He, Kaiming and Zhang, Xiangyu and Ren, Shaoqing and Sun, Jian},\n'
           '  booktitle={Proceedings of the IEEE Conference on Computer Vision and Pattern Recognition (CVPR)},\n'
           '  pages={770--778},\n'
           '  year={2016}\n'
           '}')
MOBILENET = Paper(
    id='arXiv:1704.04861', url='https://arxiv.org/abs/1704.04861',
    title='MobileNets: Efficient Convolutional Neural Networks for Mobile Vision Applications',
    bibtex='@article{howard2017mobilenets,\n'
           '  title={MobileNets: Efficient Convolutional Neural Networks for Mobile Vision Applications},\n'
           '  author={Howard, Andrew G. and Zhu, Menglong and Chen, Bo and Kalenichenko, Dmitry and Wang, Weijun'
           ' and Weyand, Tobias and Andreetto, Marco and Adam, Hartwig},\n'
           '  journal={arXiv preprint arXiv:1704.04861},\n'
           '  year={2017}\n'
           '}')
MOBILENETV2 = Paper(
    id='arXiv:1801.04381', url='https://arxiv.org/abs/1801.04381',
    title='MobileNetV2: Inverted Residuals and Linear Bottlenecks',
    bibtex='@inproceedings{sandler2018mobilenetv2,\n'
           '  title={MobileNetV2: Inverted Residuals and Linear Bottlenecks},\n'
           '  author={Sandler, Mark and Howard, Andrew and Zhu, Menglong and Zhmoginov, Andrey'
           ' and Chen, Liang-Chieh},\n'
           '  booktitle={Proceedings of the IEEE Conference on Computer Vision and Pattern Recognition (CVPR)},\n'
           '  pages={4510--4520},\n'
           '  year={2018}\n'
           '}')
ZAM = Paper(
    id=None, url='https://github.com/developer0hye/ZAM', title='ZAM: Zero parameter Attention Module',
    bibtex='@misc{developer0hye_zam,\n'
           '  title={ZAM: Zero parameter Attention Module},\n'
           '  author={developer0hye},\n'
           '  howpublished={\\url{https://github.com/developer0hye/ZAM}}\n'
           '}')
ULSAM = Paper(
    id='arXiv:2006.15102', url='https://arxiv.org/abs/2006.15102',
    title='ULSAM: Ultra-Lightweight Subspace Attention Module for Compact Convolutional Neural Networks',
    bibtex='@inproceedings{saini2020ulsam,\n'
           '  title={ULSAM: Ultra-Lightweight Subspace Attention Module for Compact Convolutional Neural Networks},\n'
           '  author={Saini, Rajat and Jha, Nandan Kumar and Das, Bedanta and Mittal, Sparsh and Mohan, C. Krishna},\n'
           '  booktitle={Proceedings of the IEEE/CVF Winter Conference on Applications of Computer Vision (WACV)},\n'
           '  pages={1627--1636},\n'
           '  year={2020}\n'
           '}')
NAM = Paper(
    id='arXiv:2111.12419', url='https://arxiv.org/abs/2111.12419', title='NAM: Normalization-based Attention Module',
    bibtex='@article{liu2021nam,\n'
           '  title={NAM: Normalization-based Attention Module},\n'
           '  author={Liu, Yichao and Shao, Zongru and Teng, Yueyang and Hoffmann, Nico},\n'
           '  journal={arXiv preprint arXiv:2111.12419},\n'
           '  year={2021}\n'
           '}')
SPEM = Paper(
    id='doi:10.1007/978-3-031-27818-1_4', url='https://doi.org/10.1007/978-3-031-27818-1_4',
    title='SPEM: Self-adaptive Pooling Enhanced Attention Module for Image Recognition (MMM 2023)',
    bibtex='@inproceedings{zhong2023spem,\n'
           '  title={SPEM: Self-adaptive Pooling Enhanced Attention Module for Image Recognition},\n'
           '  author={Zhong, Shanshan and Wen, Wushao and Qin, Jinghui},\n'
           '  booktitle={MultiMedia Modeling: 29th International Conference, MMM 2023, Bergen, Norway, January 9--12,'
           ' 2023, Proceedings, Part II},\n'
           '  pages={41--53},\n'
           '  year={2023},\n'
           '  organization={Springer}\n'
           '}')
SE = Paper(
    id='arXiv:1709.01507', url='https://arxiv.org/abs/1709.01507', title='Squeeze-and-Excitation Networks',
    bibtex='@inproceedings{hu2018squeeze,\n'
           '  title={Squeeze-and-Excitation Networks},\n'
           '  author={Hu, Jie and Shen, Li and Sun, Gang},\n'
           '  booktitle={Proceedings of the IEEE Conference on Computer Vision and Pattern Recognition (CVPR)},\n'
           '  pages={7132--7141},\n'
           '  year={2018}\n'
           '}')
ECA = Paper(
    id='arXiv:1910.03151', url='https://arxiv.org/abs/1910.03151',
    title='ECA-Net: Efficient Channel Attention for Deep Convolutional Neural Networks',
    bibtex='@inproceedings{wang2020eca,\n'
           '  title={ECA-Net: Efficient Channel Attention for Deep Convolutional Neural Networks},\n'
           '  author={Wang, Qilong and Wu, Banggu and Zhu, Pengfei and Li, Peihua and Zuo, Wangmeng and Hu, Qinghua},\n'
           '  booktitle={Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},\n'
           '  pages={11534--11542},\n'
           '  year={2020}\n'
           '}')
CBAM = Paper(
    id='arXiv:1807.06521', url='https://arxiv.org/abs/1807.06521', title='CBAM: Convolutional Block Attention Module',
    bibtex='@inproceedings{woo2018cbam,\n'
           '  title={CBAM: Convolutional Block Attention Module},\n'
           '  author={Woo, Sanghyun and Park, Jongchan and Lee, Joon-Young and Kweon, In So},\n'
           '  booktitle={Proceedings of the European Conference on Computer Vision (ECCV)},\n'
           '  pages={3--19},\n'
           '  year={2018}\n'
           '}')
BAM = Paper(
    id='arXiv:1807.06514', url='https://arxiv.org/abs/1807.06514', title='BAM: Bottleneck Attention Module',
    bibtex='@inproceedings{park2018bam,\n'
           '  title={BAM: Bottleneck Attention Module},\n'
           '  author={Park, Jongchan and Woo, Sanghyun and Lee, Joon-Young and Kweon, In So},\n'
           '  booktitle={British Machine Vision Conference (BMVC)},\n'
           '  year={2018}\n'
           '}')
SIMAM = Paper(
    id='https://proceedings.mlr.press/v139/yang21o.html', url='https://proceedings.mlr.press/v139/yang21o.html',
    title='SimAM: A Simple, Parameter-Free Attention Module for Convolutional Neural Networks (ICML 2021)',
    bibtex='@inproceedings{yang2021simam,\n'
           '  title={SimAM: A Simple, Parameter-Free Attention Module for Convolutional Neural Networks},\n'
           '  author={Yang, Lingxiao and Zhang, Ru-Yuan and Li, Lida and Xie, Xiaohua},\n'
           '  booktitle={Proceedings of the 38th International Conference on Machine Learning (ICML)},\n'
           '  series={Proceedings of Machine Learning Research},\n'
           '  volume={139},\n'
           '  pages={11863--11874},\n'
           '  year={2021}\n'
           '}')
